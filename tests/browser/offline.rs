//! A server that stops under an open page: the page says so plainly and marks its image as
//! possibly out of date, and recovers by itself when the server is back on the same port.

use crate::browser::{Driver, Scripts, Window};
use crate::helpers::{TestServer, encode, fresh_segment, rgb8, spawn_command, spawn_server};
use image::ImageFormat;

/// The status line's class and whether the picture is marked stale.
async fn alarm(window: &Window) -> (String, bool) {
    let state = window
        .run(
            r##"
            const figure = document.getElementById("picture");
            return [document.getElementById("status").className,
                    !!figure && figure.classList.contains("stale")];
            "##,
            vec![],
        )
        .await;
    serde_json::from_value(state).expect("status class and stale flag")
}

async fn upload(server: &TestServer, seed: u8) {
    let response = server
        .upload(
            encode(&rgb8(96, 64, seed), ImageFormat::Png),
            "shot.png",
            "image/png",
        )
        .await;
    assert_eq!(response.status(), 201);
}

pub async fn a_stopped_server_is_shown_plainly_and_the_page_recovers_when_it_is_back(
    driver: &Driver,
) {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);
    // B keeps the segment (and its image) alive while A is down.
    let b = spawn_server(&segment);
    upload(&b, 1).await;
    let port = a.addr.rsplit_once(':').unwrap().1.to_owned();

    let live = driver.open(Scripts::Enabled).await;
    live.goto(&a.url("/")).await;
    live.wait_for_image("image #1", |src| src.ends_with("-1"))
        .await;
    live.wait_for_status("Live: image #1").await;
    // A second page, with Live off, as in Qt's example.
    let manual = driver.open(Scripts::Enabled).await;
    manual.goto(&a.url("/")).await;
    manual.find("#enhancements[data-last-event]").await;
    manual
        .find("#live")
        .await
        .click()
        .await
        .expect("turn Live off");
    manual
        .button("Display image from shared memory")
        .await
        .click()
        .await
        .unwrap();
    manual
        .wait_for_image("image #1", |src| src.ends_with("-1"))
        .await;

    a.stop();

    let status = live.wait_for_status("Cannot reach the server at").await;
    assert!(status.contains(&a.addr), "{status}");
    assert!(status.contains("may be out of date"), "{status}");
    assert!(status.contains("reconnects by itself"), "{status}");
    assert_eq!(
        alarm(&live).await,
        ("status status-offline".to_owned(), true),
        "shown as an alarm, the image marked stale"
    );
    live.screenshot("server-down-live").await;

    manual
        .button("Display image from shared memory")
        .await
        .click()
        .await
        .unwrap();
    let status = manual.wait_for_status("Cannot reach the server at").await;
    assert!(
        status.contains("Start it again, then press \"Display image from shared memory\""),
        "{status}"
    );
    assert_eq!(
        alarm(&manual).await,
        ("status status-offline".to_owned(), true)
    );
    manual.screenshot("server-down-display-pressed").await;

    // A comes back on the same port (its old connections may still be closing).
    let a = spawn_command(&["--port", &port, "--segment", &segment], &[]);
    let status = live.wait_for_status("The server is back").await;
    assert!(status.contains("image #1"), "{status}");
    assert_eq!(alarm(&live).await, ("status status-ok".to_owned(), false));
    // And it is live again: an image loaded elsewhere shows up.
    upload(&b, 2).await;
    live.wait_for_image("image #2", |src| src.ends_with("-2"))
        .await;
    live.wait_for_status("Live: image #2").await;
    live.screenshot("server-back-live").await;

    manual
        .button("Display image from shared memory")
        .await
        .click()
        .await
        .unwrap();
    manual.wait_for_status("Displaying image #2").await;
    manual
        .wait_for_image("image #2", |src| src.ends_with("-2"))
        .await;
    assert_eq!(alarm(&manual).await, ("status status-ok".to_owned(), false));

    live.close().await;
    manual.close().await;
    drop(a);
}

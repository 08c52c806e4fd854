//! What a person sees on the page, in a real browser: loading, displaying, live updates,
//! errors, the page without JavaScript, drag-and-drop and paste, a narrow dark window.

use crate::browser::{Driver, Scripts, ShownImage, TestFile, Window};
use crate::helpers::{assert_same_pixels, encode, fresh_segment, rgb8, spawn_server};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use image::{DynamicImage, GenericImageView, ImageFormat};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Points at which the tests compare what the browser drew with what was uploaded.
const PROBES: [(u32, u32); 5] = [(0, 0), (63, 0), (0, 47), (63, 47), (31, 23)];

/// Reads the pixels at `PROBES` of the page's picture, drawn onto a canvas by the browser.
async fn drawn_pixels(window: &Window) -> Vec<[u8; 4]> {
    let probes: Vec<Value> = PROBES.iter().map(|&(x, y)| json!([x, y])).collect();
    let drawn = window
        .run(
            r##"
            const img = document.querySelector("#picture img");
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            return arguments[0].map(([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data));
            "##,
            vec![Value::Array(probes)],
        )
        .await;
    serde_json::from_value(drawn).expect("RGBA pixels from the canvas")
}

/// Fails unless the browser drew `expected`'s pixels at every probe point.
async fn assert_draws(window: &Window, expected: &DynamicImage) {
    let drawn = drawn_pixels(window).await;
    let wanted: Vec<[u8; 4]> = PROBES
        .iter()
        .map(|&(x, y)| expected.get_pixel(x, y).0)
        .collect();
    assert_eq!(drawn, wanted, "pixels the browser drew at {PROBES:?}");
}

/// Fetches what the page's picture points at and compares it with `expected`, pixel for pixel.
async fn assert_serves(shown: &ShownImage, expected: &DynamicImage) {
    let png = reqwest::get(&shown.url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("fetch the picture's src")
        .bytes()
        .await
        .expect("read the picture");
    let served = image::load_from_memory_with_format(&png, ImageFormat::Png).expect("a PNG");
    assert_same_pixels(&served, expected);
}

pub async fn an_image_loaded_in_page_a_is_shown_there_and_displayed_in_page_b(driver: &Driver) {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let picture = rgb8(64, 48, 7);
    let file = TestFile::new("harbour.png", &encode(&picture, ImageFormat::Png));
    let page_a = driver.open(Scripts::Enabled).await;
    let page_b = driver.open(Scripts::Enabled).await;
    page_a.goto(&a.url("/")).await;
    page_b.goto(&b.url("/")).await;
    // Page B works the way Qt's dialog does: nothing changes until its button is pressed.
    page_b
        .find("#live")
        .await
        .click()
        .await
        .expect("turn Live off");
    // Page A keeps a log of what its status line and progress bar showed along the way.
    page_a
        .run(
            r##"
            window.shownSteps = [];
            const progress = document.getElementById("upload-progress");
            const status = document.getElementById("status");
            new MutationObserver(() => {
              window.shownSteps.push([status.textContent, !progress.hidden]);
            }).observe(document.querySelector("main"), {
              subtree: true, childList: true, attributes: true, characterData: true,
            });
            "##,
            vec![],
        )
        .await;

    page_a.load_from_file(&file.path).await;

    let status = page_a
        .wait_for_status("Loaded harbour.png (64x48, RGB 8-bit) into shared memory segment")
        .await;
    assert!(status.contains(&segment), "{status}");
    let shown = page_a
        .wait_for_image("page A to show image #1", |src| src.ends_with("-1"))
        .await;
    assert_eq!((shown.natural_width, shown.natural_height), (64, 48));
    assert!(
        !page_a
            .find("#upload-progress")
            .await
            .is_displayed()
            .await
            .unwrap(),
        "the progress bar is gone once the image is loaded"
    );
    assert_draws(&page_a, &picture).await;
    let steps = page_a.run("return window.shownSteps;", vec![]).await;
    let steps: Vec<(String, bool)> = serde_json::from_value(steps).expect("the page's steps");
    let showed = |text: &str| {
        steps
            .iter()
            .any(|(status, progress)| status.starts_with(text) && *progress)
    };
    assert!(
        showed("Uploading harbour.png"),
        "a progress bar while uploading: {steps:?}"
    );
    assert!(
        showed("Decoding harbour.png and writing it to shared memory"),
        "then the server's work: {steps:?}"
    );
    page_a.screenshot("1-loaded-in-page-a").await;

    assert!(
        page_b.shown_image().await.is_none(),
        "B waits for its button"
    );
    page_b
        .button("Display image from shared memory")
        .await
        .click()
        .await
        .expect("press Display image from shared memory");

    let status = page_b.wait_for_status("Displaying image #1 (64x48").await;
    assert!(
        status.contains(&a.addr),
        "names the server that wrote it: {status}"
    );
    let shown = page_b
        .wait_for_image("page B to show image #1", |src| src.ends_with("-1"))
        .await;
    assert_eq!((shown.natural_width, shown.natural_height), (64, 48));
    assert_draws(&page_b, &picture).await;
    assert_serves(&shown, &picture).await;
    let facts = page_b.find("#facts").await.text().await.unwrap();
    assert!(facts.contains("64x48, RGB 8-bit"), "{facts}");
    assert!(facts.contains(&a.addr), "{facts}");
    page_b.screenshot("2-displayed-in-page-b").await;

    page_a.close().await;
    page_b.close().await;
}

pub async fn with_live_on_page_b_shows_an_image_loaded_elsewhere_within_two_seconds(
    driver: &Driver,
) {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let first = rgb8(64, 48, 1);
    assert_eq!(
        a.upload(encode(&first, ImageFormat::Png), "first.png", "image/png")
            .await
            .status(),
        201
    );
    let page_b = driver.open(Scripts::Enabled).await;
    page_b.goto(&b.url("/")).await;
    // Live is on by default, so the page shows what the segment holds as soon as it connects.
    page_b
        .wait_for_image("page B to show image #1", |src| src.ends_with("-1"))
        .await;
    let live = page_b.find("#live").await;
    assert!(live.is_selected().await.unwrap(), "Live is on by default");

    let second = rgb8(64, 48, 99);
    let response = a
        .upload(encode(&second, ImageFormat::Png), "second.png", "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let stored_at = Instant::now();
    let shown = page_b
        .wait_for_image("page B to show image #2 by itself", |src| {
            src.ends_with("-2")
        })
        .await;
    let took = stored_at.elapsed();

    assert!(
        took < Duration::from_secs(2),
        "page B showed the new image {took:?} after A stored it"
    );
    assert_eq!((shown.natural_width, shown.natural_height), (64, 48));
    assert_draws(&page_b, &second).await;
    let status = page_b.wait_for_status("Live: image #2 (64x48").await;
    assert!(status.contains(&a.addr), "{status}");
    page_b.screenshot("3-live-update-in-page-b").await;
    page_b.close().await;
}

pub async fn a_file_that_is_not_an_image_gets_the_servers_message_inline(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    let file = TestFile::new("notes.txt", b"these are words, not pixels\n");
    let page = driver.open(Scripts::Enabled).await;
    page.goto(&a.url("/")).await;

    page.load_from_file(&file.path).await;

    let status = page
        .wait_for_status("the file is not an image this server can read")
        .await;
    assert!(
        status.starts_with("notes.txt was not loaded: "),
        "in words, naming the file: {status}"
    );
    let class = page.find("#status").await.attr("class").await.unwrap();
    assert_eq!(class.as_deref(), Some("status status-error"));
    let url = page.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/", "the page stayed where it was");
    assert!(page.shown_image().await.is_none());
    page.screenshot("4-not-an-image").await;
    page.close().await;
}

pub async fn without_javascript_the_plain_forms_still_load_and_display(driver: &Driver) {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let picture = rgb8(64, 48, 3);
    let file = TestFile::new("plain.png", &encode(&picture, ImageFormat::Png));
    let page_a = driver.open(Scripts::Disabled).await;
    page_a.goto(&a.url("/")).await;
    let extras = page_a.find("#enhancements").await;
    assert!(
        !extras.is_displayed().await.unwrap(),
        "no Live toggle without JavaScript"
    );

    page_a.load_from_file(&file.path).await;

    page_a
        .wait_for_status("Loaded plain.png (64x48, RGB 8-bit) into shared memory segment")
        .await;
    let url = page_a.client.current_url().await.unwrap();
    assert_eq!(
        url.query(),
        Some("loaded=1&name=plain.png"),
        "303 to the page"
    );
    page_a
        .wait_for_image("the preview", |src| src.starts_with("data:image/png"))
        .await;
    page_a.screenshot("5-without-javascript-loaded").await;

    let page_b = driver.open(Scripts::Disabled).await;
    page_b.goto(&b.url("/")).await;
    page_b
        .button("Display image from shared memory")
        .await
        .click()
        .await
        .unwrap();
    page_b.wait_for_status("Displaying image #1 (64x48").await;
    let shown = page_b
        .wait_for_image("image #1", |src| src == "/image.png?seq=1")
        .await;
    let written = page_b.find("#facts time").await.text().await.unwrap();
    // "2026-11-30 04:58:12 UTC", not "2026-11-30T04:58:12.352Z".
    assert!(
        written.ends_with(" UTC") && written.len() == 23 && written.as_bytes()[10] == b' ',
        "a time people read: {written:?}"
    );
    assert_eq!((shown.natural_width, shown.natural_height), (64, 48));
    assert_serves(&shown, &picture).await;
    page_b.screenshot("5-without-javascript-displayed").await;

    page_a.close().await;
    page_b.close().await;
}

pub async fn dropping_or_pasting_an_image_onto_the_page_loads_it(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    let page = driver.open(Scripts::Enabled).await;
    page.goto(&a.url("/")).await;
    page.find("#enhancements[data-last-event]").await;

    let dropped = rgb8(64, 48, 40);
    page.run(
        r##"
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        for (const type of ["dragenter", "dragover", "drop"]) {
          const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer });
          document.querySelector("main").dispatchEvent(event);
        }
        "##,
        vec![json!(STANDARD.encode(encode(&dropped, ImageFormat::Png)))],
    )
    .await;
    page.wait_for_status("Loaded dropped.png (64x48, RGB 8-bit)")
        .await;
    page.wait_for_image("the dropped image", |src| src.ends_with("-1"))
        .await;
    assert_draws(&page, &dropped).await;
    let dropping = page.run(
        "return document.body.classList.contains('dropping');",
        vec![],
    );
    assert_eq!(dropping.await, json!(false), "the drop hint is gone");

    let pasted = rgb8(64, 48, 200);
    page.run(
        r##"
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const clipboard = new DataTransfer();
        clipboard.items.add(new File([bytes], "image.png", { type: "image/png" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: clipboard, bubbles: true }));
        "##,
        vec![json!(STANDARD.encode(encode(&pasted, ImageFormat::Png)))],
    )
    .await;
    page.wait_for_status("Loaded image.png (64x48, RGB 8-bit)")
        .await;
    page.wait_for_image("the pasted image", |src| src.ends_with("-2"))
        .await;
    assert_draws(&page, &pasted).await;
    page.screenshot("6-dropped-and-pasted").await;
    page.close().await;
}

pub async fn the_page_fits_a_narrow_window_in_dark_mode(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    assert_eq!(
        a.upload(
            encode(&rgb8(640, 480, 9), ImageFormat::Png),
            "wide.png",
            "image/png"
        )
        .await
        .status(),
        201
    );
    let page = driver.open_sized(Scripts::Enabled, (400, 900), true).await;
    page.goto(&a.url("/")).await;
    page.wait_for_image("the image", |src| src.ends_with("-1"))
        .await;

    let layout = page
        .run(
            r##"
            const root = document.documentElement;
            return {
              overflow: root.scrollWidth - root.clientWidth,
              dark: matchMedia("(prefers-color-scheme: dark)").matches,
              background: getComputedStyle(document.body).backgroundColor,
            };
            "##,
            vec![],
        )
        .await;
    assert_eq!(
        layout["overflow"], 0,
        "nothing sticks out sideways: {layout}"
    );
    assert_eq!(layout["dark"], true, "{layout}");
    assert_eq!(
        layout["background"], "rgb(20, 23, 28)",
        "the dark palette: {layout}"
    );
    // Keyboard users reach the Live toggle.
    let focused = page
        .run(
            "document.getElementById('live').focus(); return document.activeElement.id;",
            vec![],
        )
        .await;
    assert_eq!(focused, "live");
    page.screenshot("7-narrow-dark").await;
    page.close().await;
}

pub async fn right_after_a_large_upload_the_page_shows_a_loading_state_not_the_old_picture(
    driver: &Driver,
) {
    let a = spawn_server(&fresh_segment());
    assert_eq!(
        a.upload(
            encode(&rgb8(64, 48, 1), ImageFormat::Png),
            "old.png",
            "image/png"
        )
        .await
        .status(),
        201
    );
    let page = driver.open(Scripts::Enabled).await;
    page.goto(&a.url("/")).await;
    page.wait_for_image("the old picture", |src| src.ends_with("-1"))
        .await;
    // Every change of the page is logged with what the picture showed at that moment.
    page.run(
        r##"
        window.shownSteps = [];
        const note = () => {
          const figure = document.getElementById("picture");
          const img = figure && figure.querySelector("img");
          window.shownSteps.push({
            status: document.getElementById("status").textContent,
            loading: !!figure && !!figure.querySelector(".placeholder"),
            img: img ? img.getAttribute("src") : null,
            complete: !!img && img.complete && img.naturalWidth > 0,
          });
        };
        new MutationObserver(note).observe(document.querySelector("main"), {
          subtree: true, childList: true, attributes: true, characterData: true,
        });
        "##,
        vec![],
    )
    .await;
    let large = TestFile::new(
        "large.jpg",
        &encode(&rgb8(3840, 2160, 2), ImageFormat::Jpeg),
    );

    page.load_from_file(&large.path).await;

    page.wait_for_status("Loaded large.jpg (3840x2160").await;
    page.wait_for_image("the large image", |src| src.ends_with("-2"))
        .await;
    let steps = page.run("return window.shownSteps;", vec![]).await;
    let steps = steps.as_array().expect("the page's steps");
    let after: Vec<&Value> = steps
        .iter()
        .filter(|step| {
            step["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("Loaded large.jpg"))
        })
        .collect();
    assert!(!after.is_empty(), "{steps:?}");
    for step in &after {
        let new_image_drawn = step["img"].as_str().is_some_and(|src| src.ends_with("-2"))
            && step["complete"] == json!(true);
        assert!(
            step["loading"] == json!(true) || new_image_drawn,
            "under the new status the page showed {step}: neither a loading state nor the new \
             image (all steps: {steps:?})"
        );
    }
    assert!(
        after.iter().any(|step| step["loading"] == json!(true)),
        "a loading state while the image was on its way: {steps:?}"
    );
    page.screenshot("large-upload-drawn").await;
    page.close().await;
}

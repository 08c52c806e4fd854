//! The image on the screen: fitted inside the window on a desktop and on a phone, light and
//! dark, fetched at the width it is drawn, tiny images drawn large, and the page's icon.

use crate::browser::{Driver, Scripts, Window};
use crate::helpers::{TestServer, encode, fresh_segment, rgb8, spawn_server};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use serde::Deserialize;
use serde_json::json;

/// Where the browser drew things, in CSS pixels.
#[derive(Debug, Deserialize)]
struct Drawn {
    /// The viewport.
    view_width: f64,
    view_height: f64,
    /// How far the page sticks out sideways (0 when it does not).
    overflow: f64,
    /// The image's box.
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    /// Where the status line ends.
    status_bottom: f64,
    /// The box the image may fill.
    frame_width: f64,
    frame_height: f64,
    /// The resource the browser chose from `srcset`, and the link around the image.
    current_src: String,
    link: String,
    device_pixel_ratio: f64,
    image_rendering: String,
    caption: String,
    background: String,
}

/// Measures the page's picture once it shows image #`seq`.
async fn drawn(window: &Window, seq: u64) -> Drawn {
    window
        .wait_for_image(&format!("image #{seq}"), |src| {
            src.ends_with(&format!("-{seq}"))
        })
        .await;
    drawn_now(window).await
}

/// The `width=` a URL asks for, if any.
fn asked_width(url: &str) -> Option<u32> {
    url.split(['?', '&'])
        .find_map(|part| part.strip_prefix("width="))
        .and_then(|width| width.parse().ok())
}

/// Fails unless a `width` x `height` image is drawn whole inside the window, right under the
/// status line, as large as its frame allows, in its own proportions, and fetched at about the
/// width it is drawn.
fn assert_fits(drawn: &Drawn, (width, height): (u32, u32), what: &str) {
    let (drawn_width, drawn_height) = (drawn.right - drawn.left, drawn.bottom - drawn.top);
    assert!(
        drawn.overflow <= 0.0,
        "{what}: the page sticks out sideways: {drawn:?}"
    );
    assert!(
        drawn.left >= 0.0 && drawn.right <= drawn.view_width + 0.5,
        "{what}: wider than the window: {drawn:?}"
    );
    assert!(
        drawn.top >= drawn.status_bottom && drawn.bottom <= drawn.view_height + 0.5,
        "{what}: not inside the visible area under the status line: {drawn:?}"
    );
    assert!(
        drawn.top - drawn.status_bottom < 64.0,
        "{what}: not right under the controls: {drawn:?}"
    );
    let ratio = f64::from(width) / f64::from(height);
    assert!(
        (drawn_width / drawn_height - ratio).abs() / ratio < 0.02,
        "{what}: distorted: {drawn:?}"
    );
    assert!(
        drawn_width >= drawn.frame_width - 2.0 || drawn_height >= drawn.frame_height - 2.0,
        "{what}: smaller than the room it has: {drawn:?}"
    );
    assert!(
        drawn_width.max(drawn_height) > drawn.view_width.min(drawn.view_height) / 2.0,
        "{what}: too small to see: {drawn:?}"
    );
    let asked = asked_width(&drawn.current_src)
        .unwrap_or_else(|| panic!("{what}: the full image was fetched: {drawn:?}"));
    let needed = drawn_width * drawn.device_pixel_ratio;
    assert!(
        f64::from(asked) >= needed - 1.0 && f64::from(asked) < f64::from(width),
        "{what}: fetched {asked} pixels wide to draw {needed}: {drawn:?}"
    );
    assert!(
        asked_width(&drawn.link).is_none() && drawn.link.contains("/image.png?"),
        "{what}: a click opens the full image: {drawn:?}"
    );
}

/// Uploads `image` through `server` as PNG and returns its sequence number.
async fn upload(server: &TestServer, image: &DynamicImage, name: &str) -> u64 {
    let response = server
        .upload(encode(image, ImageFormat::Png), name, "image/png")
        .await;
    assert_eq!(response.status(), 201);
    let stored: serde_json::Value = response.json().await.unwrap();
    stored["seq"].as_u64().unwrap()
}

pub async fn portrait_and_landscape_images_fit_the_window_on_desktop_and_phone(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    let portrait = rgb8(1080, 1920, 5);
    let landscape = rgb8(1920, 1080, 6);
    let mut first = upload(&a, &portrait, "portrait.png").await;
    // A desktop and a phone, each light and dark.
    let screens = [
        ("desktop", (1280, 800), false),
        ("phone", (390, 844), true),
        ("desktop-dark", (1280, 800), true),
        ("phone-light", (390, 844), false),
    ];
    for (name, size, dark) in screens {
        let window = driver.open_viewport(Scripts::Enabled, size, dark).await;
        window.goto(&a.url("/")).await;
        let shown = drawn(&window, first).await;
        assert_eq!(
            shown.background,
            if dark {
                "rgb(20, 23, 28)"
            } else {
                "rgb(246, 247, 249)"
            },
            "{name}"
        );
        assert_fits(&shown, (1080, 1920), &format!("portrait on {name}"));
        window.screenshot(&format!("fit-{name}-portrait")).await;

        // Live: the next image replaces it, fitted again.
        let next = upload(&a, &landscape, "landscape.png").await;
        let shown = drawn(&window, next).await;
        assert_fits(&shown, (1920, 1080), &format!("landscape on {name}"));
        window.screenshot(&format!("fit-{name}-landscape")).await;
        window.close().await;
        first = upload(&a, &portrait, "portrait.png").await;
    }

    // Without JavaScript, "Display image from shared memory" fits it as well.
    let window = driver
        .open_viewport(Scripts::Disabled, (1280, 800), false)
        .await;
    window.goto(&a.url("/?show=1")).await;
    window
        .wait_for_image("the image", |src| src.starts_with("/image.png?seq="))
        .await;
    let shown = drawn_now(&window).await;
    assert_fits(&shown, (1080, 1920), "portrait without JavaScript");
    window.screenshot("fit-desktop-without-javascript").await;
    window.close().await;
}

/// The measurements of whatever the page shows now.
async fn drawn_now(window: &Window) -> Drawn {
    let measured = window
        .run(
            r##"
            const img = document.querySelector("#picture img");
            const box = img.getBoundingClientRect();
            const frame = (img.closest(".frame") || img.closest("figure")).getBoundingClientRect();
            const root = document.documentElement;
            return {
              view_width: innerWidth, view_height: innerHeight,
              overflow: root.scrollWidth - root.clientWidth,
              left: box.left, top: box.top, right: box.right, bottom: box.bottom,
              status_bottom: document.getElementById("status").getBoundingClientRect().bottom,
              frame_width: frame.width, frame_height: frame.height,
              current_src: img.currentSrc, link: img.closest("a").href,
              device_pixel_ratio: devicePixelRatio,
              image_rendering: getComputedStyle(img).imageRendering,
              caption: document.querySelector("#picture figcaption").textContent,
              background: getComputedStyle(document.body).backgroundColor,
            };
            "##,
            vec![],
        )
        .await;
    serde_json::from_value(measured).expect("the picture's measurements")
}

pub async fn a_one_pixel_image_is_drawn_as_a_visible_square_with_its_real_size(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    let dot = DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 1, Rgba([220, 40, 40, 255])));
    let seq = upload(&a, &dot, "dot.png").await;

    for scripts in [Scripts::Enabled, Scripts::Disabled] {
        let window = driver.open_viewport(scripts, (1280, 800), false).await;
        if scripts == Scripts::Enabled {
            window.goto(&a.url("/")).await;
            drawn(&window, seq).await;
        } else {
            window.goto(&a.url("/?show=1")).await;
            window
                .wait_for_image("the dot", |src| src.starts_with("/image.png?seq="))
                .await;
        }
        let shown = drawn_now(&window).await;
        let (width, height) = (shown.right - shown.left, shown.bottom - shown.top);
        assert!(
            width >= 32.0 && (width - height).abs() < 0.5,
            "{scripts:?}: drawn {width}x{height}: {shown:?}"
        );
        assert_eq!(shown.image_rendering, "pixelated", "{scripts:?}");
        assert!(
            shown.caption.contains("1x1"),
            "says its real size: {shown:?}"
        );
        assert!(
            shown.caption.contains("times its size"),
            "says it is enlarged: {shown:?}"
        );
        window
            .screenshot(&format!(
                "tiny-image-{}",
                format!("{scripts:?}").to_lowercase()
            ))
            .await;
        window.close().await;
    }
}

pub async fn the_page_has_an_icon_and_asks_for_nothing_that_is_missing(driver: &Driver) {
    let a = spawn_server(&fresh_segment());
    let window = driver.open(Scripts::Enabled).await;
    window.goto(&a.url("/")).await;
    window.find("#enhancements[data-last-event]").await;

    let icon = window
        .run(
            r##"
            const link = document.querySelector('link[rel="icon"]');
            if (!link) return null;
            return fetch(link.href).then((response) =>
              [link.type, response.status, response.headers.get("content-type")]);
            "##,
            vec![],
        )
        .await;
    assert_eq!(icon, json!(["image/svg+xml", 200, "image/svg+xml"]));
    // Whatever the browser asked for (the page, its style, script, icon, events) was there.
    let log = a.log();
    assert!(
        !log.contains("status=404"),
        "a request answered 404:\n{log}"
    );
    window.close().await;
}

//! The page, driven the way a browser without JavaScript drives it: plain forms and redirects.

use crate::helpers::{
    BROWSER_ACCEPT, encode, form_with, fresh_segment, header, rgb8, spawn_server, unescape_html,
};
use image::ImageFormat;

#[tokio::test]
async fn the_page_has_both_actions_and_needs_no_script() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);

    let response = a.get_page("/").await;

    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let page = unescape_html(&response.text().await.unwrap());
    assert!(page.contains(r#"enctype="multipart/form-data""#), "{page}");
    assert!(page.contains(r#"<input id="image" type="file" name="image" accept="image/*""#));
    assert!(page.contains("Load image from file"));
    assert!(page.contains("Display image from shared memory"));
    assert!(page.contains(&format!("segment \"{segment}\" holds no image yet")));
    assert!(page.contains(r#"href="/static/style.css?v="#), "{page}");
    // The script only enhances the page: one external file, deferred, and no inline code.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(
        page.contains(r#"<script src="/static/app.js?v="#) && page.contains("defer></script>"),
        "{page}"
    );

    let css = a.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(header(&css, "content-type").starts_with("text/css"));
}

#[tokio::test]
async fn loading_from_the_form_redirects_to_a_page_that_says_what_was_loaded() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let png = encode(&rgb8(64, 48, 1), ImageFormat::Png);

    let response = a
        .upload_form(
            form_with("image", png, "photo.png", "image/png"),
            Some(BROWSER_ACCEPT),
        )
        .await;

    assert_eq!(response.status(), 303);
    let location = header(&response, "location");
    assert!(location.starts_with("/?loaded=1"), "{location}");
    assert!(location.contains("name=photo.png"), "{location}");

    let response = a.get_page(&location).await;
    assert_eq!(response.status(), 200);
    let page = unescape_html(&response.text().await.unwrap());
    let status =
        format!("Loaded photo.png (64x48, RGB 8-bit) into shared memory segment \"{segment}\"");
    assert!(page.contains(&status), "{page}");
    assert!(
        page.contains(r#"<img src="data:image/png;base64,"#),
        "{page}"
    );
    assert!(page.contains(r#"href="/image.png?seq=1""#), "{page}");

    let response = b.get_page("/?show=1").await;
    assert_eq!(response.status(), 200);
    let page = unescape_html(&response.text().await.unwrap());
    assert!(page.contains(r#"<img src="/image.png?seq=1""#), "{page}");
    assert!(
        page.contains("Displaying image #1 (64x48, RGB 8-bit)"),
        "{page}"
    );
    assert!(
        page.contains(&a.addr),
        "names the server that wrote it: {page}"
    );
}

#[tokio::test]
async fn displaying_before_anything_was_loaded_says_to_load_first() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);

    let response = a.get_page("/?show=1").await;

    assert_eq!(response.status(), 404);
    let page = unescape_html(&response.text().await.unwrap());
    assert!(
        page.contains(&format!(
            "no image in shared memory segment \"{segment}\" yet: load one first"
        )),
        "{page}"
    );
    assert!(!page.contains("<img"), "{page}");
}

#[tokio::test]
async fn a_file_name_with_markup_is_shown_as_text() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let png = encode(&rgb8(4, 4, 0), ImageFormat::Png);

    let response = a
        .upload_form(
            form_with(
                "image",
                png,
                "<img src=x onerror=alert(1)>.png",
                "image/png",
            ),
            Some(BROWSER_ACCEPT),
        )
        .await;
    assert_eq!(response.status(), 303);
    let page = a
        .get_page(&header(&response, "location"))
        .await
        .text()
        .await
        .unwrap();

    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        unescape_html(&page).contains("Loaded <img src=x onerror=alert(1)>.png (4x4"),
        "{page}"
    );
}

//! `GET /events`: new images pushed to open pages, whichever server wrote them, and static assets
//! for the page's script.

use crate::helpers::{TestServer, encode, fresh_segment, header, rgb8, shm_files, spawn_server};
use image::ImageFormat;
use std::time::{Duration, Instant};

/// How long a test waits for an event that should come at once.
const EVENT_PATIENCE: Duration = Duration::from_secs(10);

/// One Server-Sent Event.
#[derive(Debug)]
struct SegmentEvent {
    name: String,
    id: String,
    data: serde_json::Value,
}

/// An open `/events` stream, read event by event.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    /// Opens `/events` on `server`, resuming from `last_event_id` if given.
    async fn open(server: &TestServer, last_event_id: Option<&str>) -> EventReader {
        let mut request = server
            .client
            .get(server.url("/events"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("GET /events");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), "text/event-stream");
        EventReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server ended the stream. Fails the test if none
    /// comes within `EVENT_PATIENCE`.
    async fn next(&mut self) -> Option<SegmentEvent> {
        let deadline = Instant::now() + EVENT_PATIENCE;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&block) {
                    return Some(event);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("read the event stream")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

/// An event from its lines; `None` for a block of comments (keep-alives).
fn parse_event(block: &str) -> Option<SegmentEvent> {
    let (mut name, mut id, mut data) = (None, String::new(), String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    Some(SegmentEvent {
        name: name?,
        id,
        data: serde_json::from_str(&data).expect("JSON data"),
    })
}

#[tokio::test]
async fn a_page_hears_at_once_of_an_image_written_through_another_server() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let b = spawn_server(&segment);
    let mut events = EventReader::open(&b, None).await;

    let first = events.next().await.expect("a first event");
    assert_eq!(first.name, "state");
    assert_eq!(first.data["seq"], 0);
    assert!(first.data["image"].is_null());
    assert_eq!(first.data["attached"].as_array().map(Vec::len), Some(2));
    let (incarnation, seq) = first.id.rsplit_once('-').expect("an id I-N");
    assert_eq!(seq, "0");

    let png = encode(&rgb8(40, 30, 5), ImageFormat::Png);
    let uploaded = Instant::now();
    assert_eq!(a.upload(png, "x.png", "image/png").await.status(), 201);
    let event = events.next().await.expect("an event for the new image");
    let latency = uploaded.elapsed();

    assert_eq!(event.name, "image");
    assert_eq!(event.id, format!("{incarnation}-1"));
    assert_eq!(event.data["seq"], 1);
    let image = &event.data["image"];
    assert_eq!(image["width"], 40);
    assert_eq!(image["height"], 30);
    assert_eq!(image["color"], "RGB 8-bit");
    assert_eq!(image["bytes"], 40 * 30 * 3);
    assert_eq!(image["writer_label"], a.addr.as_str());
    assert!(latency < Duration::from_secs(2), "took {latency:?}");

    // Its ETag names the same image as the event id.
    let etag = header(&b.get("/image.png").await, "etag");
    assert_eq!(etag, format!("\"{}\"", event.id));
}

#[tokio::test]
async fn a_reconnecting_page_hears_whether_it_missed_an_image() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let png = encode(&rgb8(8, 8, 1), ImageFormat::Png);
    assert_eq!(
        a.upload(png.clone(), "x.png", "image/png").await.status(),
        201
    );
    let current = EventReader::open(&a, None).await.next().await.unwrap();
    assert_eq!(current.name, "state");
    assert_eq!(current.data["seq"], 1);

    // It has the current image: the state, nothing new to load.
    let mut resumed = EventReader::open(&a, Some(&current.id)).await;
    let event = resumed.next().await.unwrap();
    assert_eq!(
        (event.name.as_str(), event.id.as_str()),
        ("state", &*current.id)
    );

    // It missed one: the first event says so.
    assert_eq!(a.upload(png, "y.png", "image/png").await.status(), 201);
    let mut resumed = EventReader::open(&a, Some(&current.id)).await;
    let event = resumed.next().await.unwrap();
    assert_eq!(event.name, "image");
    assert_eq!(event.data["seq"], 2);
}

#[tokio::test]
async fn one_watcher_serves_every_open_page() {
    let segment = fresh_segment();
    let a = spawn_server(&segment);
    let mut pages = Vec::new();
    for _ in 0..5 {
        let mut events = EventReader::open(&a, None).await;
        events.next().await.expect("a first event");
        pages.push(events);
    }

    let state = a.segment_state().await;
    let pid = state["attached"][0]["pid"]
        .as_u64()
        .expect("the server's pid");
    let watchers = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the server's threads")
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.trim() == "segment-watcher")
        .count();
    assert_eq!(watchers, 1);

    let png = encode(&rgb8(8, 8, 2), ImageFormat::Png);
    assert_eq!(a.upload(png, "x.png", "image/png").await.status(), 201);
    for events in &mut pages {
        assert_eq!(events.next().await.unwrap().data["seq"], 1);
    }
}

#[tokio::test]
async fn sigterm_ends_open_event_streams_and_the_server_exits_promptly() {
    let segment = fresh_segment();
    let mut a = spawn_server(&segment);
    let mut events = EventReader::open(&a, None).await;
    events.next().await.expect("a first event");

    let signalled = Instant::now();
    let status = a.stop();
    let took = signalled.elapsed();

    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(3), "took {took:?} to stop");
    assert!(events.next().await.is_none(), "the stream ended");
    assert_eq!(
        shm_files(&segment),
        Vec::<String>::new(),
        "left in /dev/shm"
    );
}

#[tokio::test]
async fn the_script_and_stylesheet_are_cacheable() {
    let a = spawn_server(&fresh_segment());

    let script = a.get("/static/app.js?v=1").await;
    assert_eq!(script.status(), 200);
    assert!(header(&script, "content-type").contains("javascript"));
    assert_eq!(header(&script, "cache-control"), "public, max-age=3600");
    let etag = header(&script, "etag");
    assert!(!etag.is_empty());

    let again = a
        .client
        .get(a.url("/static/app.js?v=1"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let css = a.get("/static/style.css").await;
    assert_eq!(header(&css, "cache-control"), "public, max-age=3600");
    let missing = a.get("/static/nothing.js").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(header(&missing, "cache-control"), "");
}

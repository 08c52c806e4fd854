//! Uploads that start and then stall or trickle, against a server with `--request-timeout 2`:
//! each is cut off with 408 soon after the timeout, while the server keeps answering everyone
//! else at once, and the shared image stays as it was.

use crate::corpus::{Case, Delivery};
use crate::forge;
use crate::helpers::{TestServer, fresh_segment, rgb8, spawn_server_with};
use crate::refusals::{Witness, deliver, load, problems};
use crate::wire::{self, Body};
use std::time::{Duration, Instant};

/// The request timeout the server is started with, in seconds.
const TIMEOUT_SECS: u64 = 2;

/// How long after the timeout a stalled upload may still wait for its 408.
const MARGIN: Duration = Duration::from_secs(8);

/// Uploads that begin and never finish: raw and multipart, with a length or chunked, stalled
/// after a few bytes or trickling a byte every 300 ms.
fn stalled_uploads() -> Vec<Case> {
    let png_start = forge::png_claiming(64, 48, 2, 8, &[], false);
    let form_start = b"--bnd\r\nContent-Disposition: form-data; name=\"image\"; \
                       filename=\"slow.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG"
        .to_vec();
    let form_type: &[u8] = b"multipart/form-data; boundary=bnd";
    let stalled = |label: &str, head: Vec<u8>, body: Body| Case {
        label: format!("stalled/{label}"),
        delivery: Delivery::Wire { head, body },
        expect: &[408],
        message_contains: None,
        within: Duration::from_secs(TIMEOUT_SECS) + MARGIN,
        as_browser: false,
    };
    vec![
        stalled(
            "raw-after-10-bytes",
            wire::head("/image", &[("Content-Type", b"image/png")], Some(100_000)),
            Body::StallAfter(png_start[..10].to_vec()),
        ),
        stalled(
            "raw-before-the-body",
            wire::head("/image", &[("Content-Type", b"image/png")], Some(5_000)),
            Body::StallAfter(Vec::new()),
        ),
        stalled(
            "form-inside-the-file",
            wire::head("/image", &[("Content-Type", form_type)], Some(100_000)),
            Body::StallAfter(form_start.clone()),
        ),
        stalled(
            "raw-chunked-after-one-chunk",
            wire::head(
                "/image",
                &[
                    ("Content-Type", b"application/octet-stream"),
                    ("Transfer-Encoding", b"chunked"),
                ],
                None,
            ),
            Body::StallAfter(b"8\r\n\x89PNG\r\n\x1a\n\r\n".to_vec()),
        ),
        stalled(
            "form-trickling-a-byte-every-300ms",
            wire::head("/image", &[("Content-Type", form_type)], Some(100_000)),
            Body::Trickle {
                bytes: form_start,
                every: Duration::from_millis(300),
            },
        ),
    ]
}

/// Starts a server with the short timeout and a witness on its segment, with an image loaded.
async fn impatient_pair() -> (TestServer, Witness) {
    let segment = fresh_segment();
    let timeout = TIMEOUT_SECS.to_string();
    let server = spawn_server_with(&segment, &["--request-timeout", &timeout]);
    let previous = rgb8(50, 40, 9);
    load(&server, &previous).await;
    let witness = Witness::start(&segment, previous).await;
    (server, witness)
}

/// Asks `server` for its health and segment state every 100 ms until `until` is dropped;
/// returns how many answers came and the slowest one, or the first failure.
async fn keep_asking(
    server: &TestServer,
    mut until: tokio::sync::oneshot::Receiver<()>,
) -> Result<(usize, Duration), String> {
    let mut answers = 0;
    let mut slowest = Duration::ZERO;
    loop {
        for path in ["/healthz", "/api/segment"] {
            let started = Instant::now();
            let response = server.get(path).await;
            let took = started.elapsed();
            if response.status() != 200 {
                return Err(format!("GET {path} answered {}", response.status()));
            }
            answers += 1;
            slowest = slowest.max(took);
        }
        tokio::select! {
            _ = &mut until => return Ok((answers, slowest)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[tokio::test]
async fn stalled_uploads_get_408_after_the_timeout_while_others_are_served() {
    let (server, witness) = impatient_pair().await;
    let cases = stalled_uploads();
    let (stop, until) = tokio::sync::oneshot::channel();
    let asking = keep_asking(&server, until);
    let stalling = async {
        let replies = join_all(cases.iter().map(|case| deliver(&server, case))).await;
        let _ = stop.send(());
        replies
    };
    let (asked, replies) = tokio::join!(asking, stalling);

    let mut failures = Vec::new();
    for (case, reply) in cases.iter().zip(&replies) {
        match reply {
            Ok(reply) => {
                // The message is checked in `known_bugs::a_408_says_why`: status and timing
                // count here.
                let found = problems(case, reply, false);
                if !found.is_empty() {
                    failures.push(format!("{}: {}", case.label, found.join("; ")));
                }
                println!(
                    "{}: {} after {:.1?}",
                    case.label, reply.status, reply.elapsed
                );
            }
            Err(problem) => failures.push(format!("{}: {problem}", case.label)),
        }
    }
    let (answers, slowest) = asked.expect("the server kept answering during the stalls");
    println!(
        "{} stalled uploads, all refused with 4xx; {answers} other requests answered meanwhile, \
         the slowest in {slowest:.1?}",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        answers >= 10,
        "only {answers} other requests were answered during the stalls"
    );
    assert!(
        slowest < Duration::from_secs(TIMEOUT_SECS),
        "a request took {slowest:?} while uploads stalled"
    );
    witness.unchanged().await.expect("the image is unchanged");
}

/// Polls every future to completion, keeping their order (what `futures::join_all` does,
/// without the dependency).
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

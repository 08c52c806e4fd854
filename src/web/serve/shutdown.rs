//! SIGINT and SIGTERM, counted: the first asks the server to finish what it is doing and stop,
//! the second to stop now.

use std::io;
use tokio::sync::watch;

/// How many shutdown signals the server has received; cheap to clone and to wait on.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<u32>);

/// Asks for shutdown by hand: each call counts as one signal (for tests and embedders).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<u32>);

impl ShutdownTrigger {
    /// Counts one more shutdown request.
    pub fn trigger(&self) {
        self.0.send_modify(|count| *count += 1);
    }
}

impl Shutdown {
    /// A shutdown that happens only when the returned trigger says so.
    pub fn manual() -> (Shutdown, ShutdownTrigger) {
        let (sender, receiver) = watch::channel(0);
        (Shutdown(receiver), ShutdownTrigger(sender))
    }

    /// Starts listening for SIGINT (Ctrl-C) and SIGTERM now. Call it before announcing the
    /// server, so that a signal arriving right after the announcement is counted instead of
    /// killing the process.
    pub fn on_signals() -> io::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (shutdown, trigger) = Shutdown::manual();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = interrupt.recv() => "SIGINT",
                    Some(()) = terminate.recv() => "SIGTERM",
                    else => return,
                };
                let count = *trigger.0.borrow() + 1;
                if count == 1 {
                    tracing::info!(
                        "{name} received: finishing running requests; send it again to stop now"
                    );
                } else {
                    tracing::info!("{name} received again: stopping now");
                }
                trigger.trigger();
            }
        });
        Ok(shutdown)
    }

    /// Resolves once `count` signals have arrived (at once if they already have). Never
    /// resolves if nobody can signal any more.
    pub async fn signalled(&self, count: u32) {
        let mut receiver = self.0.clone();
        if receiver.wait_for(|seen| *seen >= count).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

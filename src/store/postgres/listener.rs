//! [`Listener`]: the connection of its own that waits for `NOTIFY
//! tollgate_catalog` (another instance changed the catalog), opened on the
//! first wait and again after it is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_postgres::{AsyncMessage, NoTls};

use super::client::Pg;
use crate::store::StoreError;

/// The listening connection, opened on the first wait and again after it
/// is lost.
pub(super) struct Listener {
    notices: SyncSender<()>,
    pub(super) inbox: Mutex<Receiver<()>>,
    open: Mutex<Option<Listening>>,
}

struct Listening {
    /// Kept: dropping the client closes the connection.
    _client: tokio_postgres::Client,
    alive: Arc<AtomicBool>,
}

impl Default for Listener {
    fn default() -> Listener {
        let (notices, inbox) = sync_channel(1);
        Listener {
            notices,
            inbox: Mutex::new(inbox),
            open: Mutex::new(None),
        }
    }
}

impl Listener {
    /// Opens the listening connection on `pg`'s server unless it is open.
    pub(super) fn listen(&self, pg: &Pg) -> Result<(), StoreError> {
        let mut open = self.open.lock();
        if open
            .as_ref()
            .is_some_and(|l| l.alive.load(Ordering::Acquire))
        {
            return Ok(());
        }
        *open = None;
        let config = pg.config().clone();
        let notices = self.notices.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let client = pg.block(async move {
            let (client, mut connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(_) = message {
                        let _ = notices.try_send(());
                    }
                }
                flag.store(false, Ordering::Release);
            });
            client.batch_execute("LISTEN tollgate_catalog").await?;
            Ok(client)
        })?;
        *open = Some(Listening {
            _client: client,
            alive,
        });
        Ok(())
    }
}

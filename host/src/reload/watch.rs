//! The file watcher: which directories are watched, which of their events
//! concern the config, and the reload thread they wake (debounced).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use super::Reloader;

/// Quiet time after the last file event before reloading: editors and
/// `kubectl` touch several files per save.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a burst of events can postpone a reload.
const DEBOUNCE_MAX: Duration = Duration::from_millis(300);

/// What wakes the reload thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A file event in a watched directory.
    Changed,
    /// SIGHUP: reload even if nothing changed.
    Hangup,
    /// The proxy is shutting down.
    Stop,
}

/// A file watcher set up and watching, whose loop has not started yet.
///
/// Reloads run on a thread of their own, so how fast a change takes effect
/// does not depend on how busy the request workers are.
pub struct Watch {
    reloader: Arc<Reloader>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
    /// The names an event's path must have to wake a check (see
    /// [`concerns`]), shared with the watcher's callback.
    names: Arc<Mutex<BTreeSet<OsString>>>,
    hangup: Option<tokio::signal::unix::Signal>,
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

/// How many times in a row newly watched directories trigger another check.
const MAX_REWATCH_ROUNDS: usize = 4;

impl Watch {
    /// Starts watching now, so a change made right after start-up is seen;
    /// `hangup` is the SIGHUP stream from [`hangup`]. The loop's first
    /// step checks whether a file changed since the first build.
    pub fn start(reloader: Arc<Reloader>, hangup: Option<tokio::signal::unix::Signal>) -> Watch {
        let (tx, rx) = mpsc::channel::<Wake>();
        let events = tx.clone();
        let names = Arc::new(Mutex::new(watch_names(&reloader)));
        let wanted = Arc::clone(&names);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && !event.kind.is_access()
                && concerns(&event, &wanted.lock().unwrap_or_else(|p| p.into_inner()))
            {
                let _ = events.send(Wake::Changed);
            }
        });
        let mut watch = Watch {
            watcher: None,
            watched: BTreeSet::new(),
            names,
            hangup,
            tx,
            rx,
            reloader,
        };
        match watcher {
            Ok(w) => {
                watch.watcher = Some(w);
                watch.rewatch();
            }
            Err(e) => tracing::error!("cannot watch config files, reload only by SIGHUP: {e}"),
        }
        // A save between the first build and the watch above raised no
        // event: the fingerprint check finds it.
        let _ = watch.tx.send(Wake::Changed);
        watch
    }

    /// Watches the directories the config's files are in (or their nearest
    /// existing ancestors); returns whether a directory was added.
    ///
    /// The names that concern the config are brought up to date before the
    /// directories are looked at: a directory created in between is then
    /// either seen by the look (and watched, and checked by the caller) or
    /// created after the names know it (its event wakes a check). Looked at
    /// first, one created between the look and the names' update was
    /// neither: its event was filtered out by the names before it, and a
    /// plugin put in it waited for the next unrelated change.
    fn rewatch(&mut self) -> bool {
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = watch_names(&self.reloader);
        let wanted = self.reloader.watch_dirs();
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        let mut added = false;
        for new in wanted.difference(&self.watched) {
            match watcher.watch(new, RecursiveMode::NonRecursive) {
                Ok(()) => added = true,
                Err(e) => tracing::warn!(
                    "cannot watch {}: {e}; changes there need SIGHUP",
                    new.display()
                ),
            }
        }
        self.watched = wanted;
        added
    }

    /// Reloads on file changes and on SIGHUP until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let tx = self.tx.clone();
        let mut hup = self.hangup.take();
        // The reload thread enters this runtime so that what a reload starts
        // (ACME orders for new domains) runs on it.
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("bbproxy-reload".into())
            .spawn(move || {
                let _entered = runtime.enter();
                self.reload_loop();
            });
        if let Err(e) = thread {
            tracing::error!("cannot start the reload thread, config changes need a restart: {e}");
            return;
        }
        loop {
            let wake = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => Wake::Stop,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => Wake::Hangup,
            };
            let stop = wake == Wake::Stop;
            if tx.send(wake).is_err() || stop {
                return;
            }
        }
    }

    fn reload_loop(mut self) {
        while let Ok(wake) = self.rx.recv() {
            let forced = match wake {
                Wake::Stop => return,
                Wake::Hangup => {
                    tracing::info!("SIGHUP: reloading");
                    true
                }
                Wake::Changed => match debounce(&self.rx) {
                    Some(forced) => forced,
                    None => return,
                },
            };
            let _ = self.reloader.reload_blocking(forced);
            // Watch what the serving and the attempted config name, failed
            // or not. A newly watched directory may already hold the change
            // a failed reload was missing (it raised no event here): check
            // again.
            for _ in 0..MAX_REWATCH_ROUNDS {
                if !self.rewatch() {
                    break;
                }
                let _ = self.reloader.reload_blocking(false);
            }
        }
    }
}

/// Waits until events stop for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]).
/// Returns whether a SIGHUP came in meanwhile, or `None` to stop.
fn debounce(rx: &mpsc::Receiver<Wake>) -> Option<bool> {
    let end = tokio::time::Instant::now() + DEBOUNCE_MAX;
    let mut forced = false;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Some(forced);
        }
        match rx.recv_timeout(DEBOUNCE.min(left)) {
            Ok(Wake::Changed) => {}
            Ok(Wake::Hangup) => {
                tracing::info!("SIGHUP: reloading");
                forced = true;
            }
            Ok(Wake::Stop) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => return Some(forced),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Every name on the path of a watched file (its own, and each directory's
/// on the way to it, which a watched ancestor sees created).
fn watch_names(reloader: &Reloader) -> BTreeSet<OsString> {
    names_on_paths(&reloader.watched_now())
}

/// The names of every component of `paths`.
fn names_on_paths(paths: &[PathBuf]) -> BTreeSet<OsString> {
    paths
        .iter()
        .flat_map(|f| {
            f.components().filter_map(|c| match c {
                std::path::Component::Normal(name) => Some(name.to_os_string()),
                _ => None,
            })
        })
        .collect()
}

/// Whether a file event in a watched directory may concern the config: a
/// path of it is named like a watched file or a directory on the way to
/// one (a save, a write-then-rename onto it, a directory created for it),
/// or its name starts with `..` (Kubernetes swaps a mounted ConfigMap's or
/// Secret's files through its `..data` symlink, which no config names), or
/// it has no path (the watcher lost track and asks for a rescan). Any
/// other file there (a log written next to config.json, an editor's swap
/// file) wakes no check: with a chatty neighbour each of its writes would
/// wake the reload thread, and every 300 ms it would read and hash every
/// file the config names.
fn concerns(event: &notify::Event, names: &BTreeSet<OsString>) -> bool {
    event.paths.is_empty()
        || event.need_rescan()
        || event.paths.iter().any(|p| {
            p.file_name().is_some_and(|name| {
                names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
            })
        })
}

#[cfg(test)]
mod tests {
    use notify::Event;
    use notify::event::{CreateKind, DataChange, EventKind, ModifyKind, RenameMode};

    use super::*;

    fn names(paths: &[&str]) -> BTreeSet<OsString> {
        names_on_paths(&paths.iter().map(PathBuf::from).collect::<Vec<_>>())
    }

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    /// A write to a file no config names, in the config's directory, wakes
    /// no check; a save of a watched file, a rename onto one, a directory
    /// created on the way to one, Kubernetes' `..data` swap and a rescan
    /// do.
    #[test]
    fn only_events_that_may_concern_the_config_wake_a_check() {
        let wanted = names(&["/etc/bb/config.json", "/etc/bb/plugins/router.wasm"]);
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let create = EventKind::Create(CreateKind::Folder);
        assert!(!concerns(&event(write, &["/etc/bb/access.log"]), &wanted));
        assert!(!concerns(
            &event(write, &["/etc/bb/.config.json.swp"]),
            &wanted
        ));
        assert!(concerns(&event(write, &["/etc/bb/config.json"]), &wanted));
        assert!(concerns(
            &event(rename, &["/etc/bb/config.json.tmp", "/etc/bb/config.json"]),
            &wanted
        ));
        assert!(concerns(&event(create, &["/etc/bb/plugins"]), &wanted));
        assert!(concerns(&event(rename, &["/etc/bb/..data"]), &wanted));
        assert!(concerns(&event(EventKind::Other, &[]), &wanted));
    }
}

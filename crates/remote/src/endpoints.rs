//! The endpoints of a remote deployment: a fixed list, or the addresses a DNS name resolves to
//! (a Kubernetes headless Service), resolved again every `dns_refresh`. Each endpoint is served
//! by one replica, which claims it when it starts and gives it back when it stops; the number
//! of endpoints is the deployment's replica count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ferroserve_runtime::Liveness;
use tokio::sync::watch;

/// Where a remote deployment's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    /// These `host:port` endpoints, each a replica.
    List(Vec<String>),
    /// Every address `host:port` resolves to, each a replica; resolved again every `refresh`.
    Dns {
        /// `host:port`.
        name: String,
        /// How often the name is resolved again.
        refresh: Duration,
    },
}

/// The current endpoints and which of them a replica has claimed.
#[derive(Debug)]
pub(crate) struct Endpoints {
    source: EndpointSource,
    state: Mutex<State>,
    count: watch::Sender<usize>,
    refreshing: std::sync::Once,
}

#[derive(Debug, Default)]
struct State {
    current: BTreeSet<String>,
    /// Endpoints served by a replica, with that replica's liveness.
    claimed: BTreeMap<String, Arc<Liveness>>,
}

impl Endpoints {
    pub(crate) fn new(source: EndpointSource) -> Arc<Self> {
        let current: BTreeSet<String> = match &source {
            EndpointSource::List(list) => list.iter().cloned().collect(),
            EndpointSource::Dns { .. } => BTreeSet::new(),
        };
        let (count, _) = watch::channel(current.len());
        Arc::new(Endpoints {
            source,
            state: Mutex::new(State {
                current,
                claimed: BTreeMap::new(),
            }),
            count,
            refreshing: std::sync::Once::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the sets consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many endpoints there are now, updated as DNS answers change. Starts the DNS
    /// refresh the first time (it needs the server's tokio runtime).
    pub(crate) fn count(self: &Arc<Self>) -> watch::Receiver<usize> {
        if let EndpointSource::Dns { name, refresh } = &self.source {
            let (name, refresh) = (name.clone(), *refresh);
            let weak = Arc::downgrade(self);
            self.refreshing.call_once(|| {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(refresh_dns(weak, name, refresh));
                }
            });
        }
        self.count.subscribe()
    }

    /// Claims an endpoint that no replica serves, if there is one, for the replica of
    /// `liveness` (taken out of rotation the moment the endpoint leaves DNS).
    pub(crate) fn claim(&self, liveness: Arc<Liveness>) -> Option<String> {
        let mut s = self.state();
        let free = s
            .current
            .iter()
            .find(|e| !s.claimed.contains_key(*e))
            .cloned()?;
        s.claimed.insert(free.clone(), liveness);
        Some(free)
    }

    /// Gives an endpoint back (its replica stopped or failed to start).
    pub(crate) fn release(&self, endpoint: &str) {
        self.state().claimed.remove(endpoint);
    }

    /// Whether the endpoint is still one of the deployment's (it may have left DNS).
    pub(crate) fn contains(&self, endpoint: &str) -> bool {
        self.state().current.contains(endpoint)
    }

    fn set(&self, addresses: BTreeSet<String>) {
        let mut s = self.state();
        if s.current == addresses {
            return;
        }
        let added: Vec<&String> = addresses.difference(&s.current).collect();
        let left: Vec<&String> = s.current.difference(&addresses).collect();
        tracing::info!(?added, ?left, "remote endpoints changed");
        // Out of rotation before the count drops, so that the controller, scaling down,
        // drains these replicas and not others.
        for endpoint in &left {
            if let Some(liveness) = s.claimed.get(*endpoint) {
                liveness.set_ejected(true);
            }
        }
        s.current = addresses;
        self.count.send_replace(s.current.len());
    }
}

/// Resolves `name` every `refresh` while the endpoints exist. A failed lookup keeps the last
/// answer (a DNS hiccup does not take every endpoint away).
async fn refresh_dns(endpoints: Weak<Endpoints>, name: String, refresh: Duration) {
    loop {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                let Some(e) = endpoints.upgrade() else { return };
                e.set(addrs.map(|a| a.to_string()).collect());
            }
            Err(err) => {
                tracing::warn!(%name, error = %err, "cannot resolve the remote deployment's DNS name")
            }
        }
        if endpoints.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(refresh).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_is_claimed_once_and_comes_back_when_released() {
        let e = Endpoints::new(EndpointSource::List(vec!["a:1".into(), "b:1".into()]));
        let live = || Arc::new(Liveness::default());
        let first = e.claim(live()).unwrap();
        let second = e.claim(live()).unwrap();
        assert_ne!(first, second);
        assert_eq!(e.claim(live()), None);
        e.release(&first);
        assert_eq!(e.claim(live()), Some(first));
    }

    #[test]
    fn an_endpoint_leaving_takes_its_replica_out_of_rotation_at_once() {
        let e = Endpoints::new(EndpointSource::List(vec!["a:1".into(), "b:1".into()]));
        let (la, lb) = (Arc::new(Liveness::default()), Arc::new(Liveness::default()));
        let a = e.claim(la.clone()).unwrap();
        e.claim(lb.clone()).unwrap();
        e.set(std::iter::once("b:1".to_owned()).collect());
        assert_eq!(a, "a:1");
        assert!(la.is_ejected() && !lb.is_ejected());
        assert!(!e.contains("a:1"));
        assert_eq!(*e.count.borrow(), 1);
    }

    #[tokio::test]
    async fn dns_answers_become_endpoints() {
        let e = Endpoints::new(EndpointSource::Dns {
            name: "localhost:8081".into(),
            refresh: Duration::from_millis(50),
        });
        let mut count = e.count();
        tokio::time::timeout(Duration::from_secs(5), count.wait_for(|&n| n > 0))
            .await
            .expect("localhost resolves")
            .expect("the endpoints are alive");
        let claimed = e.claim(Arc::new(Liveness::default())).unwrap();
        assert!(claimed.ends_with(":8081"), "{claimed}");
        assert!(e.contains(&claimed));
    }
}

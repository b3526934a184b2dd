//! STAND-IN for the SDK API of SDK_API.md until branch `sdk` lands; removed at merge.
#![allow(dead_code, clippy::new_without_default, clippy::result_large_err)]

pub use aethex_sdk::{Event, RequestId, SdkError, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictStrategy {
    NewestWins,
    ServerWins,
    ClientWins,
    Manual,
}
impl std::str::FromStr for ConflictStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "newest_wins" => Self::NewestWins,
            "server_wins" => Self::ServerWins,
            "client_wins" => Self::ClientWins,
            "manual" => Self::Manual,
            _ => return Err(s.into()),
        })
    }
}
#[derive(Debug, Clone)]
pub enum CredentialStore {
    Keyring { service: String },
    FileOnly,
}
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub api_url: String,
    pub client_key: String,
    pub data_dir: PathBuf,
    pub conflict_strategy: ConflictStrategy,
    pub auto_sync_interval: Duration,
    pub request_timeout: Duration,
    pub credential_store: CredentialStore,
}
impl ClientConfig {
    pub fn new(
        api_url: impl Into<String>,
        client_key: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            api_url: api_url.into(),
            client_key: client_key.into(),
            data_dir: data_dir.into(),
            conflict_strategy: ConflictStrategy::NewestWins,
            auto_sync_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            credential_store: CredentialStore::FileOnly,
        }
    }
}
#[derive(Default)]
struct Inner {
    next: AtomicU64,
    queue: Mutex<VecDeque<Event>>,
}
impl Inner {
    fn fail(&self) -> RequestId {
        let id = RequestId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.queue.lock().unwrap().push_back(Event::Completed {
            request: id,
            outcome: Err(SdkError {
                code: aethex_protocol::ErrorCode::Unavailable,
                message: "stand-in".into(),
                status: 0,
                details: None,
            }),
        });
        id
    }
}
pub struct Auth(Arc<Inner>);
pub struct Saves(Arc<Inner>);
#[derive(Clone)]
pub struct Client {
    auth: Arc<Auth>,
    saves: Arc<Saves>,
    inner: Arc<Inner>,
}
impl Client {
    pub fn new(_config: ClientConfig) -> Result<Client, SdkError> {
        let inner = Arc::new(Inner::default());
        Ok(Client {
            auth: Arc::new(Auth(inner.clone())),
            saves: Arc::new(Saves(inner.clone())),
            inner,
        })
    }
    pub fn drain_events(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut q = self.inner.queue.lock().unwrap();
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        n
    }
    pub fn auth(&self) -> &Auth {
        &self.auth
    }
    pub fn saves(&self) -> &Saves {
        &self.saves
    }
    pub fn shutdown(&self) {}
}
macro_rules! fails { ($($name:ident($($arg:ident: $t:ty),*);)*) => { $(pub fn $name(&self, $($arg: $t),*) -> RequestId { $(let _ = $arg;)* self.0.fail() })* } }
impl Auth {
    fails! {
        register(email: String, password: String, username: String);
        login_email(email: String, password: String);
        login_device(device_id: Option<String>);
        login_oauth(provider: String);
        link_device(device_id: Option<String>);
        link_email(email: String, password: String);
        link_oauth(provider: String);
        request_password_reset(email: String);
        reset_password(token: String, new_password: String);
        verify_email(token: String);
        fetch_profile();
        update_profile(changes: Value);
        resume_session();
        logout();
    }
    pub fn current_user(&self) -> Option<Value> {
        None
    }
    pub fn is_logged_in(&self) -> bool {
        false
    }
}
impl Saves {
    fails! {
        save(slot: String, data: Value, metadata: Option<Value>);
        load(slot: String);
        list();
        delete(slot: String);
        history(slot: Option<String>);
        restore(slot: String, version: i64);
        resolve_conflict(slot: String, data: Value);
        sync_now();
    }
    pub fn enable_auto_sync(&self, _enabled: bool) {}
    pub fn sync_status(&self) -> String {
        "disabled".into()
    }
}

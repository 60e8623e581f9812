use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::test;
use serde_json::value::RawValue;
use serde_json::Value;
use switchboard_protocol::Scope;

use crate::{
    Hub, HubError, Mode, NodeInfo, NodeMembers, Policy, PolicyStore, Readiness, RoomDetail,
    RoomMember, RoomSummary, SessionInfo,
};

pub(super) const TOKEN: &str = "s3cret-admin-token";

/// Rooms and sessions in maps, and a record of what the API asked for.
pub(super) struct FakeHub {
    pub(super) policy: PolicyStore,
    pub(super) rooms: Mutex<BTreeMap<String, Vec<RoomMember>>>,
    pub(super) sessions: Mutex<BTreeMap<String, SessionInfo>>,
    pub(super) kicked: Mutex<Vec<String>>,
    pub(super) sent: Mutex<Vec<(String, String)>>,
    pub(super) published: Mutex<Vec<(String, String, Scope)>>,
    pub(super) ready: AtomicBool,
    /// Messages longer than this are refused as too large.
    pub(super) max_message: usize,
    /// When set, send and publish answer `Unavailable` with this reason.
    pub(super) unavailable: Mutex<Option<String>>,
}

impl FakeHub {
    pub(super) fn new() -> Arc<FakeHub> {
        FakeHub::with_policy(Policy::default())
    }

    pub(super) fn with_policy(policy: Policy) -> Arc<FakeHub> {
        Arc::new(FakeHub {
            policy: PolicyStore::new(policy),
            rooms: Mutex::default(),
            sessions: Mutex::default(),
            kicked: Mutex::default(),
            sent: Mutex::default(),
            published: Mutex::default(),
            ready: AtomicBool::new(true),
            max_message: 64,
            unavailable: Mutex::default(),
        })
    }

    pub(super) fn add_room(&self, name: &str, sessions: &[&str]) {
        let members = sessions
            .iter()
            .map(|s| RoomMember {
                session: (*s).to_owned(),
                user: Some(format!("user-{s}")),
                worker: 0,
            })
            .collect();
        self.rooms.lock().unwrap().insert(name.to_owned(), members);
    }

    pub(super) fn add_session(&self, id: &str) {
        self.sessions.lock().unwrap().insert(
            id.to_owned(),
            SessionInfo {
                id: id.to_owned(),
                user: None,
                endpoint: "default".to_owned(),
                mode: Mode::Json,
                worker: 1,
                subscriptions: 2,
                connected_at: 1_700_000_000,
            },
        );
    }

    fn check(&self, data: &RawValue) -> Result<(), HubError> {
        if let Some(reason) = self.unavailable.lock().unwrap().clone() {
            return Err(HubError::Unavailable(reason));
        }
        let size = data.get().len();
        if size > self.max_message {
            return Err(HubError::TooLarge {
                limit: self.max_message,
                size,
            });
        }
        Ok(())
    }
}

impl Hub for FakeHub {
    fn rooms(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<RoomSummary> {
        self.rooms
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after))
            .take(limit)
            .map(|(name, members)| RoomSummary {
                name: name.clone(),
                members: members.len(),
            })
            .collect()
    }

    async fn room(&self, name: &str) -> Option<RoomDetail> {
        let members = self.rooms.lock().unwrap().get(name)?.clone();
        Some(RoomDetail {
            name: name.to_owned(),
            nodes: vec![NodeMembers {
                node: "fake".to_owned(),
                members: members.len(),
            }],
            members,
            missing: Vec::new(),
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        Ok(vec![NodeInfo {
            id: "fake".to_owned(),
            address: "127.0.0.1:8080".to_owned(),
            version: "0".to_owned(),
            sessions: self.sessions.lock().unwrap().len(),
            last_seen: 0,
        }])
    }

    fn sessions(&self, after: Option<&str>, limit: usize) -> Vec<SessionInfo> {
        self.sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| after.is_none_or(|after| s.id.as_str() > after))
            .take(limit)
            .cloned()
            .collect()
    }

    fn session(&self, id: &str) -> Option<SessionInfo> {
        self.sessions.lock().unwrap().get(id).cloned()
    }

    async fn kick(&self, id: &str) -> bool {
        let found = self.sessions.lock().unwrap().remove(id).is_some();
        if found {
            self.kicked.lock().unwrap().push(id.to_owned());
        }
        found
    }

    async fn send(&self, id: &str, data: &RawValue) -> Result<(), HubError> {
        if !self.sessions.lock().unwrap().contains_key(id) {
            return Err(HubError::NotFound);
        }
        self.check(data)?;
        self.sent
            .lock()
            .unwrap()
            .push((id.to_owned(), data.get().to_owned()));
        Ok(())
    }

    async fn publish(
        &self,
        room: &str,
        data: &RawValue,
        scope: Scope,
        by: crate::hub::Publisher,
    ) -> Result<(), HubError> {
        assert_eq!(by, crate::hub::Publisher::Admin);
        self.check(data)?;
        self.published
            .lock()
            .unwrap()
            .push((room.to_owned(), data.get().to_owned(), scope));
        Ok(())
    }

    fn readiness(&self) -> Readiness {
        if self.ready.load(Ordering::Relaxed) {
            Readiness::Ready
        } else {
            Readiness::Draining
        }
    }

    fn metrics(&self) -> String {
        "# TYPE switchboard_sessions gauge\nswitchboard_sessions 3\n".to_owned()
    }

    fn policy(&self) -> &PolicyStore {
        &self.policy
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts the status and the API's error shape with `code`.
    #[track_caller]
    pub(super) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
}

pub(super) async fn send<S, R, B>(app: &S, req: R) -> Reply
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, req).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await.to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// A request with the right token.
pub(super) fn admin(method: &str, uri: &str) -> test::TestRequest {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    test::TestRequest::default()
        .method(method)
        .uri(uri)
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
}

/// The admin API over `hub`, guarded by [`TOKEN`], without a state file.
macro_rules! app {
    ($hub:expr) => {
        app!(
            $hub,
            $crate::AdminOptions {
                token: Some($crate::tests::api::support::TOKEN.to_owned()),
                state: None,
            }
        )
    };
    ($hub:expr, $options:expr) => {
        actix_web::test::init_service(
            actix_web::App::new()
                .configure($crate::configure(::std::sync::Arc::clone(&$hub), $options))
                .default_service(actix_web::web::to($crate::not_found)),
        )
        .await
    };
}
pub(super) use app;

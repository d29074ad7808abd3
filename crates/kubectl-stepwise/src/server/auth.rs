//! Who is looking, and what they may do.
//!
//! Locally (`--auth=kubeconfig`) the server is the person: it reads and acts with their
//! kubeconfig, on 127.0.0.1 only. In the cluster (`--auth=token`) a person signs in with a bearer
//! token the API server accepts (a ServiceAccount or OIDC token); the server checks it with a
//! TokenReview, then acts as that person by impersonation, so Kubernetes RBAC decides, and asks
//! a SelfSubjectAccessReview (as them) before it enables a button. The token stays in the
//! server's memory, never in a log or a page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use kubectl_stepwise::dashboard::view::Access;

/// How long an answer of the API server about a person is reused.
const REVIEW_TTL: Duration = Duration::from_secs(30);
/// How long a sign-in lasts before its token is reviewed again.
const SESSION_REVIEW: Duration = Duration::from_secs(300);

/// How people are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The server is the person whose kubeconfig it uses (local use, 127.0.0.1 only).
    Kubeconfig,
    /// Each person signs in with a bearer token; the server impersonates them.
    Token,
}

/// The API server's answers to (verb, resource, namespace) for one person, with when each came.
type Answers = Mutex<HashMap<(String, String, String), (Instant, Result<(), String>)>>;

/// A person signed in with a token.
pub struct Person {
    /// Their name, as the API server's TokenReview gave it.
    pub user: String,
    token: String,
    reviewed: Mutex<Instant>,
    /// A client that acts as them.
    pub client: Client,
    answers: Answers,
}

/// Who is looking at a page.
#[derive(Clone)]
pub enum Viewer {
    /// The kubeconfig's user.
    Local,
    /// A person signed in with a token.
    Person(Arc<Person>),
}

/// Sign-ins, and the server's own identity.
pub struct Auth {
    /// How people are told apart.
    pub mode: Mode,
    /// Whether actions are served at all.
    pub actions: bool,
    /// The server's own client (the kubeconfig's user locally; its ServiceAccount in a cluster).
    pub client: Client,
    config: Config,
    /// The kubeconfig's user as the API server names it (locally).
    local_user: String,
    sessions: Mutex<HashMap<String, Arc<Person>>>,
    local_answers: Answers,
}

/// Why a request was refused.
#[derive(Debug)]
pub struct Refused(pub u16, pub String);

impl Auth {
    /// `config` is the server's own; impersonated clients are derived from it.
    pub async fn new(mode: Mode, actions: bool, config: Config) -> anyhow::Result<Self> {
        let client = Client::try_from(config.clone())?;
        let local_user = whoami(&client).await;
        Ok(Auth {
            mode,
            actions,
            client,
            config,
            local_user,
            sessions: Mutex::default(),
            local_answers: Mutex::default(),
        })
    }

    /// Checks a token with the API server and opens a session for its person; the session's id
    /// goes into the page's cookie.
    pub async fn sign_in(&self, token: &str) -> Result<(String, Arc<Person>), Refused> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Refused(400, "no token given: paste a bearer token the API server accepts".into()));
        }
        let person = Arc::new(self.review(token).await?);
        let id = session_id().map_err(|e| Refused(500, format!("cannot make a session id: {e}")))?;
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), person.clone());
        Ok((id, person))
    }

    /// Ends a session.
    pub fn sign_out(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    async fn review(&self, token: &str) -> Result<Person, Refused> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refused(502, format!("the API server could not review the token: {}", api_reason(&e))))?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        match (status.authenticated, user.username) {
            (Some(true), Some(name)) => {
                let mut config = self.config.clone();
                config.auth_info.impersonate = Some(name.clone());
                config.auth_info.impersonate_groups = user.groups.filter(|g| !g.is_empty());
                config.auth_info.impersonate_uid = user.uid;
                config.auth_info.impersonate_user_extra =
                    user.extra.map(|extra| extra.into_iter().collect::<HashMap<_, _>>());
                let client =
                    Client::try_from(config).map_err(|e| Refused(500, format!("cannot act as {name}: {e}")))?;
                Ok(Person {
                    user: name,
                    token: token.to_string(),
                    reviewed: Mutex::new(Instant::now()),
                    client,
                    answers: Mutex::default(),
                })
            }
            _ => Err(Refused(
                401,
                format!(
                    "the API server did not accept this token{}",
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            )),
        }
    }

    /// Who sent a request: its session cookie or its `Authorization: Bearer` header in token
    /// mode (a session whose token the API server no longer accepts is over); the kubeconfig's
    /// user locally.
    pub async fn viewer(&self, headers: &http::HeaderMap) -> Result<Viewer, Refused> {
        if self.mode == Mode::Kubeconfig {
            return Ok(Viewer::Local);
        }
        if let Some(token) = bearer(headers) {
            let person = self.session_of_token(token).await?;
            return Ok(Viewer::Person(person));
        }
        let Some(id) = session_cookie(headers) else {
            return Err(Refused(401, "sign in with a bearer token first".into()));
        };
        let person = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        let Some(person) = person else { return Err(Refused(401, "your session ended: sign in again".into())) };
        let due = person.reviewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > SESSION_REVIEW;
        if due {
            match self.review(&person.token).await {
                Ok(_) => *person.reviewed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now(),
                Err(refused) => {
                    self.sign_out(id);
                    return Err(Refused(401, format!("your session ended: {}", refused.1)));
                }
            }
        }
        Ok(Viewer::Person(person))
    }

    /// A bearer token sent with each request (scripts): reviewed once, then reused like a session.
    async fn session_of_token(&self, token: &str) -> Result<Arc<Person>, Refused> {
        let key = format!("bearer {token}");
        let known = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        if let Some(person) =
            known.filter(|p| p.reviewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < SESSION_REVIEW)
        {
            return Ok(person);
        }
        let person = Arc::new(self.review(token).await?);
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, person.clone());
        Ok(person)
    }

    /// The client that acts for a viewer.
    pub fn client_of(&self, viewer: &Viewer) -> Client {
        match viewer {
            Viewer::Local => self.client.clone(),
            Viewer::Person(p) => p.client.clone(),
        }
    }

    /// A viewer's name, for the page and for the Events that record what they did.
    pub fn name_of(&self, viewer: &Viewer) -> String {
        match viewer {
            Viewer::Local => self.local_user.clone(),
            Viewer::Person(p) => p.user.clone(),
        }
    }

    /// Whether the viewer may see a namespace's Rollouts (list them). Locally the watches are
    /// theirs, so what they hold they may see.
    pub async fn may_read(&self, viewer: &Viewer, namespace: &str) -> bool {
        match viewer {
            Viewer::Local => true,
            Viewer::Person(_) => self.may(viewer, "list", "rollouts", namespace).await.is_ok(),
        }
    }

    /// What the viewer may do to the Rollouts of a namespace.
    pub async fn access(&self, viewer: &Viewer, namespace: &str) -> Access {
        if !self.actions {
            return Access::ReadOnly("read-only: the dashboard was started without --actions".into());
        }
        Access::Acting {
            rollouts: self.may(viewer, "patch", "rollouts", namespace).await,
            status: self.may(viewer, "patch", "rollouts/status", namespace).await,
        }
    }

    /// A SelfSubjectAccessReview as the viewer, its answer reused for a while.
    async fn may(&self, viewer: &Viewer, verb: &str, resource: &str, namespace: &str) -> Result<(), String> {
        let key = (verb.to_string(), resource.to_string(), namespace.to_string());
        let answers = match viewer {
            Viewer::Local => &self.local_answers,
            Viewer::Person(p) => &p.answers,
        };
        let cached = answers.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        if let Some((_, answer)) = cached.filter(|(at, _)| at.elapsed() < REVIEW_TTL) {
            return answer;
        }
        let answer = self.ask(viewer, verb, resource, namespace).await;
        answers.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (Instant::now(), answer.clone()));
        answer
    }

    async fn ask(&self, viewer: &Viewer, verb: &str, resource: &str, namespace: &str) -> Result<(), String> {
        let (resource_name, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(stepwise_api::GROUP.into()),
                    resource: Some(resource_name.into()),
                    subresource,
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let who = self.name_of(viewer);
        let refused = |why: String| Err(format!("{who} may not {verb} {resource} in namespace {namespace}{why}"));
        match Api::<SelfSubjectAccessReview>::all(self.client_of(viewer)).create(&PostParams::default(), &review).await
        {
            Ok(answer) => {
                let status = answer.status.unwrap_or_default();
                if status.allowed {
                    Ok(())
                } else {
                    let why = status.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default();
                    refused(format!("{why}: Kubernetes RBAC decides; ask for a Role that grants it"))
                }
            }
            Err(e) => refused(format!(": the API server could not tell ({})", api_reason(&e))),
        }
    }
}

/// The client's user as the API server names it (a SelfSubjectReview), for the Events that record
/// what they did; the kubeconfig's name for them when the API server cannot tell.
async fn whoami(client: &Client) -> String {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    review.ok().and_then(|r| r.status?.user_info?.username).unwrap_or_else(|| "the kubeconfig's user".into())
}

/// The API server's own words for an error.
pub fn api_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} {}", status.code, status.message),
        e => e.to_string(),
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "stepwise-session";

/// The session id in a request's cookies.
pub fn session_cookie(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// 32 random bytes, hex: the kernel's randomness, as a session id must not be guessable.
fn session_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

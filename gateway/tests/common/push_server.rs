//! A stand-in for APNs and FCM on loopback: HTTP/2 over TLS (ALPN `h2` only, a
//! certificate from a test CA), checking what the real services check and answering
//! their real errors.
//!
//! APNs (`POST /3/device/<token>`): the provider token (ES256 JWT, `kid` = the key
//! id, `iss` = the team, `iat` within the hour) verified with the key's public half;
//! `apns-topic` present; `apns-push-type` `alert` with `aps.alert` (priority 10) or
//! `background` with only `content-available` (priority 5); `apns-collapse-id` at
//! most 64 bytes; `apns-id` a UUID; payload at most 4 KiB. A token marked
//! unregistered answers 410 `Unregistered`.
//!
//! FCM: `POST /token` takes the service account's OAuth2 JWT assertion (RS256,
//! `aud` = the token URI, the `firebase.messaging` scope) and issues an access
//! token; `POST /v1/projects/<project>/messages:send` wants it as the bearer, a
//! `message` with a `token`, and only string `data` values. A token marked
//! unregistered answers 404 with the `UNREGISTERED` error code.
//!
//! Anything else that is wrong is recorded as a violation (tests assert there are
//! none) and answered 400.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

pub const KEY_ID: &str = "ABC123DEFG";
pub const TEAM_ID: &str = "TEAM123456";
pub const BUNDLE: &str = "com.example.courier";
pub const PROJECT: &str = "courier-test-project";
const CLIENT_EMAIL: &str = "push@courier-test-project.iam.gserviceaccount.com";

/// One push the stand-in accepted (or refused as unregistered).
#[derive(Debug, Clone)]
pub struct Received {
    /// `apns` or `fcm`.
    pub service: &'static str,
    pub token: String,
    /// APNs `apns-push-type`, or `message`/`withdraw` from FCM's data.
    pub kind: String,
    pub collapse_id: String,
    pub payload: Value,
    pub at: Instant,
    pub accepted: bool,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
    unregistered: Mutex<HashSet<String>>,
    access_tokens: Mutex<HashSet<String>>,
    apns_public_pem: Vec<u8>,
    fcm_public_pem: Vec<u8>,
    token_uri: String,
}

pub struct PushServer {
    pub addr: SocketAddr,
    /// The test CA (for `push.ca_file`).
    pub ca_file: PathBuf,
    /// The APNs signing key (for `push.apns_key_path`).
    pub apns_key_file: PathBuf,
    /// The FCM service account (for `push.fcm_service_account_path`).
    pub fcm_account_file: PathBuf,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl PushServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("https://{addr}");

        // A CA, and a certificate for 127.0.0.1 it signs.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        // The APNs key (P-256), and the service account with the RSA fixture key.
        let apns_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let apns_key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        std::fs::write(&apns_key_file, apns_key.serialize_pem()).unwrap();
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
        let rsa_private = std::fs::read_to_string(fixtures.join("rsa.key.pem")).unwrap();
        let token_uri = format!("{base}/token");
        let fcm_account_file = dir.path().join("service-account.json");
        std::fs::write(
            &fcm_account_file,
            serde_json::to_vec(&json!({
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "test",
                "private_key": rsa_private,
                "client_email": CLIENT_EMAIL,
                "token_uri": token_uri,
            }))
            .unwrap(),
        )
        .unwrap();
        let shared = Arc::new(Shared {
            apns_public_pem: apns_key.public_key_pem().into_bytes(),
            fcm_public_pem: std::fs::read(fixtures.join("rsa.pub.pem")).unwrap(),
            token_uri,
            ..Shared::default()
        });

        let router = Router::new()
            .route("/3/device/{token}", post(apns))
            .route("/token", post(oauth_token))
            .route("/v1/projects/{project}/messages:send", post(fcm))
            .with_state(shared.clone());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        tower::ServiceExt::oneshot(router.clone(), req)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            apns_key_file,
            fcm_account_file,
            shared,
            _dir: dir,
        }
    }

    /// Points `config`'s push section at this server, APNs and FCM both.
    pub fn configure(&self, push: &mut courier_gateway::config::PushConfig) {
        let base = format!("https://{}", self.addr);
        push.apns_key_path = self.apns_key_file.display().to_string();
        push.apns_key_id = KEY_ID.into();
        push.apns_team_id = TEAM_ID.into();
        push.apns_topics = BUNDLE.into();
        push.apns_endpoint = base.clone();
        push.apns_sandbox_endpoint = base.clone();
        push.fcm_service_account_path = self.fcm_account_file.display().to_string();
        push.fcm_endpoint = base;
        push.ca_file = self.ca_file.display().to_string();
    }

    /// Answers pushes to `token` as unregistered from now on.
    pub fn unregister(&self, token: &str) {
        self.shared
            .unregistered
            .lock()
            .unwrap()
            .insert(token.to_owned());
    }

    /// Everything received for `token` so far.
    pub fn received(&self, token: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.token == token)
            .cloned()
            .collect()
    }

    /// What did not look like a real client of APNs/FCM.
    pub fn violations(&self) -> Vec<String> {
        self.shared.violations.lock().unwrap().clone()
    }

    /// Waits until `n` pushes for `token` arrived; panics after `within`.
    pub async fn wait_for(&self, token: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received(token);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} pushes to {token} within {within:?}; violations: {:?}",
                got.len(),
                self.violations()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn bad(shared: &Shared, why: String) -> Response {
    shared.violations.lock().unwrap().push(why.clone());
    (StatusCode::BAD_REQUEST, Json(json!({"reason": why}))).into_response()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && s.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

async fn apns(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The provider token.
    let Some(jwt) = header(&headers, "authorization").strip_prefix("bearer ") else {
        return bad(
            &shared,
            "APNs: no `authorization: bearer` provider token".into(),
        );
    };
    let key = jsonwebtoken::DecodingKey::from_ec_pem(&shared.apns_public_pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let decoded = match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
        Ok(d) => d,
        Err(e) => {
            return bad(
                &shared,
                format!("APNs: provider token does not verify: {e}"),
            )
        }
    };
    let iat = decoded.claims["iat"].as_u64().unwrap_or(0);
    let now = courier_storage::now_ms() / 1000;
    if decoded.header.kid.as_deref() != Some(KEY_ID)
        || decoded.claims["iss"] != TEAM_ID
        || iat + 3600 < now
        || iat > now + 60
    {
        return bad(
            &shared,
            format!("APNs: provider token claims {:?}", decoded.claims),
        );
    }
    // Headers and payload.
    if header(&headers, "apns-topic") != BUNDLE {
        return bad(&shared, "APNs: apns-topic is not the bundle id".into());
    }
    let push_type = header(&headers, "apns-push-type").to_owned();
    let collapse_id = header(&headers, "apns-collapse-id").to_owned();
    if collapse_id.len() > 64 || !is_uuid(header(&headers, "apns-id")) {
        return bad(
            &shared,
            "APNs: apns-collapse-id too long or apns-id not a UUID".into(),
        );
    }
    if body.len() > 4096 {
        return bad(&shared, "APNs: payload over 4 KiB".into());
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return bad(&shared, "APNs: payload is not JSON".into());
    };
    let aps = &payload["aps"];
    let priority = header(&headers, "apns-priority");
    let shape_ok = match push_type.as_str() {
        "alert" => aps["alert"].is_object() && priority == "10",
        "background" => {
            aps["content-available"] == 1
                && aps.as_object().is_some_and(|o| o.len() == 1)
                && priority == "5"
        }
        _ => false,
    };
    if !shape_ok || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad(&shared, format!("APNs: {push_type} push shaped {payload}"));
    }
    let unregistered = shared.unregistered.lock().unwrap().contains(&token);
    shared.received.lock().unwrap().push(Received {
        service: "apns",
        token,
        kind: push_type,
        collapse_id,
        payload,
        at: Instant::now(),
        accepted: !unregistered,
    });
    if unregistered {
        let body = json!({"reason": "Unregistered", "timestamp": courier_storage::now_ms()});
        return (StatusCode::GONE, Json(body)).into_response();
    }
    StatusCode::OK.into_response()
}

async fn oauth_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url_pairs(&body);
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return bad(&shared, "OAuth2: wrong grant_type".into());
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&shared.fcm_public_pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[shared.token_uri.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let claims = match jsonwebtoken::decode::<Value>(get("assertion"), &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => return bad(&shared, format!("OAuth2: assertion does not verify: {e}")),
    };
    if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
        return bad(&shared, format!("OAuth2: scope {}", claims["scope"]));
    }
    let token = format!("ya29.test-{}", rand::random::<u64>());
    shared.access_tokens.lock().unwrap().insert(token.clone());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// `application/x-www-form-urlencoded` pairs (percent-decoded).
fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap_or_default()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn fcm(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = header(&headers, "authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("");
    if !shared.access_tokens.lock().unwrap().contains(bearer) {
        return bad(&shared, "FCM: no access token from /token".into());
    }
    if project != PROJECT {
        return bad(&shared, format!("FCM: project {project}"));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad(&shared, "FCM: body is not JSON".into());
    };
    let message = &request["message"];
    let Some(token) = message["token"].as_str().map(str::to_owned) else {
        return bad(&shared, "FCM: message without a token".into());
    };
    let data = message["data"].as_object().cloned().unwrap_or_default();
    if data.values().any(|v| !v.is_string()) {
        return bad(
            &shared,
            format!("FCM: data values must be strings: {}", message["data"]),
        );
    }
    let unregistered = shared.unregistered.lock().unwrap().contains(&token);
    shared.received.lock().unwrap().push(Received {
        service: "fcm",
        token,
        kind: data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        collapse_id: message["android"]["collapse_key"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        payload: message.clone(),
        at: Instant::now(),
        accepted: !unregistered,
    });
    if unregistered {
        let error = json!({"error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED",
            }],
        }});
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    Json(json!({"name": format!("projects/{PROJECT}/messages/{}", rand::random::<u32>())}))
        .into_response()
}

//! Tokens the application's backend mints (JWTs): HS256 with a shared secret, RS256
//! and EdDSA with public keys from PEM files or a JWKS document. Good ones open
//! sessions and HTTP calls as a user created on first use; expired ones, wrong
//! issuers, audiences or keys, `alg: none`, algorithm confusion and subjects that
//! name password accounts are refused with `BAD_TOKEN`.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{http_code, kicked, next_text, TestServer};
use courier_protocol::ErrorCode;
use courier_sdk::{Client, ClientOptions, HttpClient, SdkError};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "an application secret of at least thirty-two bytes";
const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "courier";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a token for `sub` valid for an hour, from the configured issuer.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600})
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, key_file: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

async fn server(public_keys: &str) -> TestServer {
    let keys = match public_keys {
        "" => String::new(),
        file => fixture(file).display().to_string(),
    };
    TestServer::start_with(|c| {
        c.jwt_hs256_secret = SECRET.into();
        c.jwt_public_keys = keys;
        c.jwt_issuer = ISSUER.into();
        c.jwt_audience = AUDIENCE.into();
    })
    .await
}

/// `token` opens neither an HTTP call nor a session; the HTTP answer says `why`.
async fn refused(t: &TestServer, token: &str, why: &str) {
    let e = t.http.clone().with_token(token).me().await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadToken)), "{why}");
    let SdkError::Http { message, .. } = &e else {
        unreachable!()
    };
    assert!(message.contains(why), "{why}: answered {message:?}");
    let e = Client::connect(t.server.tcp_addr(), token, ClientOptions::default())
        .await
        .err()
        .unwrap_or_else(|| panic!("{why}: a session opened"));
    assert_eq!(e.code(), Some(ErrorCode::BadToken), "{why}");
}

#[tokio::test]
async fn an_hs256_token_opens_a_session_as_a_user_created_on_first_use() {
    let t = server("").await;
    let token = hs256(&claims("app-user-7"), SECRET);
    let as_app_user = t.http.clone().with_token(&token);
    let me = as_app_user.me().await.unwrap();
    assert_eq!(
        (me.name.as_str(), me.display_name.as_deref()),
        ("app-user-7", None)
    );
    // The display-name claim (`name`) sets the display name, and a new one changes it.
    for shown in ["Seven", "Agent Seven"] {
        let mut with_name = claims("app-user-7");
        with_name["name"] = json!(shown);
        let named = t.http.clone().with_token(hs256(&with_name, SECRET));
        assert_eq!(
            named.me().await.unwrap().display_name.as_deref(),
            Some(shown)
        );
    }
    // One the user sets itself holds until a token names another.
    let me = as_app_user.set_display_name(Some("Se7en")).await.unwrap();
    assert_eq!(me.display_name.as_deref(), Some("Se7en"));
    let mut bad_name = claims("app-user-7");
    bad_name["name"] = json!("line\nbreak");
    let ignored = t.http.clone().with_token(hs256(&bad_name, SECRET));
    assert_eq!(
        ignored.me().await.unwrap().display_name.as_deref(),
        Some("Se7en")
    );
    let e = as_app_user.set_display_name(Some("")).await.unwrap_err();
    assert_eq!(http_code(&e).0, 400);
    // The same subject is the same user, whatever token names it.
    let again = hs256(&claims("app-user-7"), SECRET);
    assert_eq!(
        t.http
            .clone()
            .with_token(&again)
            .me()
            .await
            .unwrap()
            .user_id,
        me.user_id
    );

    // It chats with a password user over the binary protocol.
    let bob = t.user("bob").await;
    let options = ClientOptions {
        device_id: "app-phone".into(),
        ..ClientOptions::default()
    };
    let (app, _app_events) = Client::connect(t.server.tcp_addr(), &token, options)
        .await
        .unwrap();
    assert_eq!(app.user_id(), me.user_id);
    let (_b, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let c = app.direct_with(bob.user_id).unwrap();
    app.send_text(&c, "hello from the app").await.unwrap();
    let m = next_text(&mut bob_events).await;
    assert_eq!(m.sender, me.user_id);

    // No password opens it, and no registration takes its name.
    let e = t.http.login("app-user-7", "password123").await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadCredentials)));
    let e = t
        .http
        .register("app-user-7", "password123")
        .await
        .unwrap_err();
    assert_eq!(http_code(&e).1, Some(ErrorCode::AlreadyExists));

    // A token that names a password account is refused: no takeover.
    refused(&t, &hs256(&claims("bob"), SECRET), "a password account").await;

    // A banned user's application tokens open nothing either.
    let ban = format!(
        "http://{}/v1/admin/users/{}/ban",
        t.server.http_addr(),
        me.user_id
    );
    let banned = reqwest::Client::new()
        .post(ban)
        .bearer_auth(courier_gateway::config::TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(banned.status().as_u16(), 204);
    let e = as_app_user.me().await.unwrap_err();
    assert_eq!(http_code(&e), (403, Some(ErrorCode::Banned)));
}

#[tokio::test]
async fn bad_tokens_are_refused_with_bad_token() {
    let t = server("rsa.pub.pem").await;
    let mut expired = claims("carol");
    expired["exp"] = json!(now() - 3600);
    refused(&t, &hs256(&expired, SECRET), "expired").await;
    let mut not_yet = claims("carol");
    not_yet["nbf"] = json!(now() + 3600);
    refused(&t, &hs256(&not_yet, SECRET), "not valid yet").await;
    let mut issuer = claims("carol");
    issuer["iss"] = json!("https://elsewhere.example.com");
    refused(&t, &hs256(&issuer, SECRET), "wrong issuer").await;
    let mut audience = claims("carol");
    audience["aud"] = json!("another-service");
    refused(&t, &hs256(&audience, SECRET), "wrong audience").await;
    let mut no_exp = claims("carol");
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(&t, &hs256(&no_exp, SECRET), "a required claim is missing").await;
    refused(
        &t,
        &hs256(&claims("carol"), "another secret that is also long enough"),
        "bad signature",
    )
    .await;
    refused(
        &t,
        &signed(
            Algorithm::RS256,
            None,
            "rsa-other.key.pem",
            &claims("carol"),
        ),
        "bad signature",
    )
    .await;
    refused(
        &t,
        &hs256(&claims("Not A Name!"), SECRET),
        "not a user name",
    )
    .await;
    // An EdDSA token where only HS256 and RS256 keys are configured.
    refused(
        &t,
        &signed(Algorithm::EdDSA, None, "ed25519.key.pem", &claims("carol")),
        "no key for its algorithm",
    )
    .await;

    // `alg: none`, unsigned: the header {"alg":"none","typ":"JWT"} on good claims.
    let good = hs256(&claims("carol"), SECRET);
    let payload = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    refused(&t, &none, "not a JWT with a supported algorithm").await;
    // Algorithm confusion: an HS256 token whose "secret" is the RSA public key.
    let public = std::fs::read_to_string(fixture("rsa.pub.pem")).unwrap();
    refused(&t, &hs256(&claims("carol"), &public), "bad signature").await;

    // None of them created the user.
    assert!(t
        .http
        .clone()
        .with_token(&t.user("dave").await.token)
        .user("carol")
        .await
        .is_err());
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_verify_with_keys_from_pem_or_jwks() {
    let pem = server("rsa.pub.pem").await;
    let token = signed(Algorithm::RS256, None, "rsa.key.pem", &claims("erin"));
    assert_eq!(
        pem.http.clone().with_token(&token).me().await.unwrap().name,
        "erin"
    );

    let ed = server("ed25519.pub.pem").await;
    let token = signed(Algorithm::EdDSA, None, "ed25519.key.pem", &claims("frank"));
    assert_eq!(
        ed.http.clone().with_token(&token).me().await.unwrap().name,
        "frank"
    );

    let jwks = server("jwks.json").await;
    for (alg, kid, key, user) in [
        (Algorithm::RS256, Some("rsa-1"), "rsa.key.pem", "grace"),
        (Algorithm::EdDSA, Some("ed-1"), "ed25519.key.pem", "heidi"),
        (Algorithm::EdDSA, None, "ed25519.key.pem", "ivan"),
    ] {
        let token = signed(alg, kid, key, &claims(user));
        let me = jwks.http.clone().with_token(&token).me().await.unwrap();
        assert_eq!(me.name, user);
    }
    // A kid that names another key is refused even though the signature would verify.
    let wrong_kid = signed(
        Algorithm::RS256,
        Some("ed-1"),
        "rsa.key.pem",
        &claims("judy"),
    );
    refused(&jwks, &wrong_kid, "no key for its algorithm or key id").await;
}

#[tokio::test]
async fn an_application_token_session_ends_when_it_expires() {
    let t = TestServer::start_with(|c| {
        c.jwt_hs256_secret = SECRET.into();
        c.jwt_leeway_secs = 0;
    })
    .await;
    let mut short = json!({"sub": "kim", "exp": now() + 2});
    let token = hs256(&short, SECRET);
    let (_k, mut events) = Client::connect(t.server.tcp_addr(), &token, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(kicked(&mut events).await, ErrorCode::LoggedOut);
    short["exp"] = json!(now() + 3600);
    let http = HttpClient::new(format!("http://{}", t.server.http_addr()));
    assert_eq!(
        http.with_token(hs256(&short, SECRET))
            .me()
            .await
            .unwrap()
            .name,
        "kim"
    );
}

#[tokio::test]
async fn password_accounts_can_be_switched_off() {
    let t = TestServer::start_with(|c| {
        c.jwt_hs256_secret = SECRET.into();
        c.password_accounts = false;
    })
    .await;
    let e = t.http.register("lena", "password123").await.unwrap_err();
    assert_eq!(http_code(&e), (403, Some(ErrorCode::Forbidden)));
    let e = t.http.login("lena", "password123").await.unwrap_err();
    assert_eq!(http_code(&e), (403, Some(ErrorCode::Forbidden)));
    let token = hs256(&json!({"sub": "lena", "exp": now() + 600}), SECRET);
    assert_eq!(
        t.http.clone().with_token(&token).me().await.unwrap().name,
        "lena"
    );
}

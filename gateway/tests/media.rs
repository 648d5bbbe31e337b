//! Media: upload (streamed, hashed, deduplicated, sniffed, limited), moderation,
//! signed downloads with Range, media messages, garbage collection.

mod common;

use std::path::Path;

use common::{users, TestServer};
use courier_sdk::{ConversationId, ErrorCode, SdkError};
use sha2::{Digest, Sha256};

/// A 1x1 PNG; `tag` bytes after IEND make distinct blobs of the same type.
fn png(tag: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00,
        0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    v.extend_from_slice(tag);
    v
}

fn blob_files(data_dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("media"), &mut out);
    walk(&data_dir.join("media-tmp"), &mut out);
    out
}

fn status(e: &SdkError) -> (u16, Option<ErrorCode>) {
    match e {
        SdkError::Http { status, .. } => (*status, e.code()),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_dedupe_and_download_with_signed_links_and_ranges() {
    let t = TestServer::start().await;
    let p = users(&t, "u", 2).await;
    let bytes = png(b"one");
    let a = t.http_as(&p[0]).upload_bytes(bytes.clone()).await.unwrap();
    let b = t.http_as(&p[1]).upload_bytes(bytes.clone()).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(a.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        (a.mime.as_str(), a.size, a.width, a.height),
        ("image/png", bytes.len() as u64, 3, 2)
    );
    let data_dir = t.server.api().config.data_dir.clone();
    let files = blob_files(&data_dir);
    assert_eq!(files.len(), 1, "stored once: {files:?}");

    let (code, got) = t.http.download(&a.url, None).await.unwrap();
    assert_eq!((code, got), (200, bytes.clone()));
    let (code, part) = t.http.download(&a.url, Some((2, 5))).await.unwrap();
    assert_eq!((code, part.as_slice()), (206, &bytes[2..6]));
    let (code, tail) = t
        .http
        .download(&a.url, Some((bytes.len() as u64 - 3, 10_000)))
        .await
        .unwrap();
    assert_eq!((code, tail.as_slice()), (206, &bytes[bytes.len() - 3..]));
    assert!(t
        .http
        .download(&a.url, Some((10_000, 10_001)))
        .await
        .is_err());

    // Tampered and expired links are refused.
    let tampered = a.url.replace("sig=", "sig=00");
    assert_eq!(
        status(&t.http.download(&tampered, None).await.unwrap_err()),
        (403, Some(ErrorCode::BadSignature))
    );
    let other_blob = a.url.replace(&a.id, &"ab".repeat(32));
    assert_eq!(
        status(&t.http.download(&other_blob, None).await.unwrap_err()),
        (403, Some(ErrorCode::BadSignature))
    );
    let expired = t.server.api().media.signed_path(&a.id, 1);
    assert_eq!(
        status(&t.http.download(&expired, None).await.unwrap_err()),
        (403, Some(ErrorCode::BadSignature))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_type_and_rate_limits() {
    let t = TestServer::start_with(|c| {
        c.media_max_bytes = 1024 * 1024;
        c.media_uploads_per_minute = 3;
        c.rate_limits = courier_gateway::config::Switch::On;
    })
    .await;
    let p = users(&t, "l", 1).await;
    let http = t.http_as(&p[0]);
    let mut big = png(b"");
    big.resize(3 * 1024 * 1024, 0);
    let (code, body) = raw_upload(t.server.http_addr(), &p[0].token, &big).await;
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("\"code\":310"), "{body}");
    let data_dir = t.server.api().config.data_dir.clone();
    assert!(
        blob_files(&data_dir).is_empty(),
        "nothing left on disk after a refused upload"
    );
    let err = http
        .upload_bytes(b"just some text, not an image".to_vec())
        .await
        .unwrap_err();
    assert_eq!(status(&err), (415, Some(ErrorCode::MediaTypeNotAllowed)));
    http.upload_bytes(png(b"x")).await.unwrap();
    let err = http.upload_bytes(png(b"y")).await.unwrap_err();
    assert_eq!(status(&err), (429, Some(ErrorCode::RateLimited)));
    t.stop().await;
}

/// Uploads `bytes` over a raw connection, reading the answer while still writing:
/// the server answers (and stops reading) as soon as the upload is too large, which
/// an ordinary client may see as a broken pipe instead of the answer.
async fn raw_upload(addr: std::net::SocketAddr, token: &str, bytes: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
        bytes.len()
    );
    w.write_all(head.as_bytes()).await.unwrap();
    let body = bytes.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in body.chunks(16 * 1024) {
            if w.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = r.read_to_end(&mut answer).await;
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// A moderation webhook that answers every request with `verdict`.
async fn webhook(verdict: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let body = format!("{{\"verdict\":\"{verdict}\"}}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/moderate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_blocks_and_quarantines() {
    let blocked = png(b"forbidden");
    let blocked_hash = hex::encode(Sha256::digest(&blocked));
    let hook = webhook("quarantine").await;
    let t = TestServer::start_with(|c| {
        c.media_blocklist = vec![blocked_hash.clone()];
        c.media_moderation_webhook = hook;
        c.admin_token = "operator-secret".into();
    })
    .await;
    let p = users(&t, "m", 1).await;
    let http = t.http_as(&p[0]);
    assert_eq!(
        status(&http.upload_bytes(blocked).await.unwrap_err()),
        (451, Some(ErrorCode::MediaRejected))
    );

    // The webhook quarantines: stored, never served until an operator releases it.
    let held = http.upload_bytes(png(b"review me")).await.unwrap();
    assert_eq!(held.status, "quarantined");
    assert_eq!(
        status(&t.http.download(&held.url, None).await.unwrap_err()),
        (451, Some(ErrorCode::MediaUnavailable))
    );
    let base = format!("http://{}", t.server.http_addr());
    let client = reqwest::Client::new();
    let release = format!("{base}/v1/admin/media/{}/release", held.id);
    assert_eq!(client.post(&release).send().await.unwrap().status(), 403);
    assert_eq!(
        client
            .post(&release)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        client
            .post(&release)
            .bearer_auth("operator-secret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(t.http.download(&held.url, None).await.unwrap().0, 200);

    // Blocking later makes it unservable, and re-uploads are refused.
    let block = format!("{base}/v1/admin/media/{}/block", held.id);
    assert_eq!(
        client
            .post(&block)
            .bearer_auth("operator-secret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        status(&t.http.download(&held.url, None).await.unwrap_err()),
        (451, Some(ErrorCode::MediaUnavailable))
    );
    assert_eq!(
        status(&http.upload_bytes(png(b"review me")).await.unwrap_err()),
        (451, Some(ErrorCode::MediaRejected))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_messages_and_garbage_collection() {
    let t = TestServer::start_with(|c| c.media_gc_grace_secs = 0).await;
    let p = users(&t, "g", 2).await;
    let (alice, bob) = (t.http_as(&p[0]), t.http_as(&p[1]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    std::fs::write(&path, png(b"photo")).unwrap();
    let photo = alice.upload_file(&path).await.unwrap();
    let unused = alice.upload_bytes(png(b"never sent")).await.unwrap();
    let (a, _ae) = t.connect(&p[0], "phone").await;
    let (b, _be) = t.connect(&p[1], "phone").await;
    let c = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();

    // Only the uploader may send a blob; unknown blobs are refused.
    let err = b
        .send(&c, photo.body("photo.png"), "steal".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let mut fake = photo.clone();
    fake.sha256 = "cd".repeat(32);
    assert_eq!(
        a.send(&c, fake.body("x"), "fake".into())
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::NotFound)
    );
    a.send(&c, photo.body("photo.png"), "real".into())
        .await
        .unwrap();
    let history = bob.history_all(&c, 0).await.unwrap();
    let body = &history[0].body;
    assert_eq!(
        (
            body["type"].as_str(),
            body["sha256"].as_str(),
            body["name"].as_str()
        ),
        (Some("media"), Some(&*photo.sha256), Some("photo.png"))
    );
    assert_eq!(body["width"], 3);
    let _ = bob;

    // GC: the sent blob stays, the unused one goes.
    let deleted = t
        .server
        .api()
        .collect_media_garbage(courier_storage::now_ms() + 1_000)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(t.http.download(&photo.url, None).await.unwrap().0, 200);
    assert!(t.http.download(&unused.url, None).await.is_err());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_blobs_move_cold_and_old_history_is_pruned() {
    let t = TestServer::start_with(|c| {
        c.media_cold_after_days = 30;
        c.history_retention_days = 90;
        c.lifecycle_interval_secs = 0;
        // The lifecycle runs below jump months ahead; tokens must outlive the jump
        // (expired ones are swept by the same run).
        c.token_ttl_secs = 365 * 24 * 3600;
    })
    .await;
    let p = users(&t, "c", 2).await;
    let alice = t.http_as(&p[0]);
    let photo = alice.upload_bytes(png(b"old photo")).await.unwrap();
    let (a, _ae) = t.connect(&p[0], "phone").await;
    let c = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();
    a.send(&c, photo.body("old.png"), "m".into()).await.unwrap();
    for i in 0..9 {
        a.send_text(&c, format!("old {i}")).await.unwrap();
    }
    let day = 24 * 3600 * 1000;
    let api = t.server.api();

    // 31 days later: the blob is cold, still served; history is within 90 days.
    let report = api
        .run_lifecycle(courier_storage::now_ms() + 31 * day)
        .await;
    assert_eq!((report.blobs_moved_cold, report.messages_pruned), (1, 0));
    let data_dir = api.config.data_dir.clone();
    assert!(data_dir
        .join("media-cold")
        .join(&photo.sha256[..2])
        .join(&photo.sha256[2..4])
        .join(&photo.sha256)
        .is_file());
    assert_eq!(t.http.download(&photo.url, None).await.unwrap().0, 200);

    // 91 days later: all ten messages are past retention and removed; pulls say so,
    // and seqs carry on.
    let report = api
        .run_lifecycle(courier_storage::now_ms() + 91 * day)
        .await;
    assert_eq!(report.messages_pruned, 10);
    let page = t
        .http_as(&p[1])
        .history(&c, Default::default())
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.retained_from_seq, 11);
    assert_eq!(a.send_text(&c, "new").await.unwrap().seq, 11);
    let page = t
        .http_as(&p[1])
        .history(&c, Default::default())
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![11]
    );
    t.stop().await;
}

/// A real S3-compatible server: moto's server mode (`.ci/run` installs it from PyPI).
struct Moto {
    child: tokio::process::Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Self {
        // The project installs what its tests need: moto comes from PyPI.
        let present = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let installed = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "moto[server]"])
                .status()
                .expect("python3 runs");
            assert!(installed.success(), "pip install 'moto[server]' failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(&endpoint).send().await.is_ok() {
                for bucket in ["courier-media", "courier-media-cold"] {
                    let r = client
                        .put(format!("{endpoint}/{bucket}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
                return Self { child, endpoint };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("moto's S3 server did not start: install it with `python3 -m pip install 'moto[server]'` (.ci/run does)");
    }

    async fn keys(&self, bucket: &str) -> usize {
        let xml = reqwest::get(format!("{}/{bucket}", self.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.matches("<Key>").count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_against_a_real_s3_server() {
    let mut moto = Moto::start().await;
    let endpoint = moto.endpoint.clone();
    let t = TestServer::start_with(|c| {
        c.media_backend = "s3".into();
        c.media_s3_endpoint = endpoint;
        c.media_s3_access_key = "test".into();
        c.media_s3_secret_key = "test".into();
        c.media_cold_after_days = 30;
        c.media_gc_grace_secs = 0;
        c.lifecycle_interval_secs = 0;
    })
    .await;
    let p = users(&t, "s", 2).await;
    let bytes = png(b"in the bucket");
    let a = t.http_as(&p[0]).upload_bytes(bytes.clone()).await.unwrap();
    let b = t.http_as(&p[1]).upload_bytes(bytes.clone()).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(
        moto.keys("courier-media").await,
        1,
        "stored once in the bucket"
    );
    assert_eq!(
        t.http.download(&a.url, None).await.unwrap(),
        (200, bytes.clone())
    );
    let (code, part) = t.http.download(&a.url, Some((1, 4))).await.unwrap();
    assert_eq!((code, part.as_slice()), (206, &bytes[1..5]));

    // Send it (so GC keeps it), then age it into the cold bucket: still served.
    let (client, _e) = t.connect(&p[0], "phone").await;
    let c = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();
    client.send(&c, a.body("x.png"), "s3".into()).await.unwrap();
    let unused = t.http_as(&p[0]).upload_bytes(png(b"unused")).await.unwrap();
    let report = t
        .server
        .api()
        .run_lifecycle(courier_storage::now_ms() + 31 * 24 * 3600 * 1000)
        .await;
    assert_eq!(report.blobs_deleted, 1);
    assert_eq!(report.blobs_moved_cold, 1);
    assert_eq!(
        (
            moto.keys("courier-media").await,
            moto.keys("courier-media-cold").await
        ),
        (0, 1)
    );
    assert_eq!(t.http.download(&a.url, None).await.unwrap(), (200, bytes));
    assert!(t.http.download(&unused.url, None).await.is_err());
    t.stop().await;
    let _ = moto.child.kill().await;
}

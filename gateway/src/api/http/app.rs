//! The web chat app at `/app/`: static files built into the binary, so that the
//! embedded default server needs nothing beside it. The script is the TypeScript SDK
//! and `client-sdk/ts/src/app` bundled by `npm run app` (in `client-sdk/ts`) into
//! `gateway/app/app.js`; the SDK's tests check that the committed bundle is what its
//! sources build to.
//!
//! Each file is answered with an `ETag` (its SHA-256) and `Cache-Control: no-cache`,
//! so browsers revalidate and a new build is seen at once; a Content Security Policy
//! lets the page load only its own files and talk only to this server.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use sha2::{Digest, Sha256};

/// One file of the app.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: "/app/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../../app/index.html"),
    },
    Asset {
        path: "/app/app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../app/app.css"),
    },
    Asset {
        path: "/app/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../app/app.js"),
    },
];

/// Scripts and styles from this origin only; images also from `blob:` (previews of
/// an upload before it is sent); connections to this origin (HTTP and WebSocket).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; connect-src 'self' ws: wss:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The assets' entity tags, computed once.
fn etags() -> &'static [String; 3] {
    static ETAGS: OnceLock<[String; 3]> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS.each_ref().map(|a| {
            let digest = Sha256::digest(a.bytes);
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
    })
}

fn answer(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).expect("hex is a valid header value"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.bytes).into_response()
    }
}

/// `/app/` and its files; `/` and `/app` lead to `/app/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", axum::routing::get(|| async { Redirect::to("/app/") }))
        .route(
            "/app",
            axum::routing::get(|| async { Redirect::to("/app/") }),
        );
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            axum::routing::get(move |headers: HeaderMap| async move { answer(index, &headers) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_tag_and_the_page_loads_its_files() {
        let tags = etags();
        assert!(tags[0] != tags[1] && tags[1] != tags[2]);
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(page.contains("app.js") && page.contains("app.css"));
        assert!(
            !ASSETS[2].bytes.is_empty(),
            "run `npm run app` in client-sdk/ts"
        );
    }

    #[test]
    fn a_revalidation_with_the_current_tag_is_answered_not_modified() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&etags()[2]).unwrap(),
        );
        assert_eq!(answer(2, &headers).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"old\""));
        let fresh = answer(2, &headers);
        assert_eq!(fresh.status(), StatusCode::OK);
        assert!(fresh
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
    }
}

//! Files the hub serves on its public listener from inside the binary: the JavaScript client
//! (`/client/switchboard.js`, always) and the demo pages (`/demo/chat`, `/demo/dashboard`, when
//! `demos` is on). Embedded, so a node needs no files beside it and the client always matches
//! the hub that serves it.

use actix_web::{http::header, web, HttpRequest, HttpResponse};

const CLIENT_JS: &str = include_str!("../../clients/js/switchboard.js");
const CLIENT_DTS: &str = include_str!("../../clients/js/switchboard.d.ts");
const CHAT_HTML: &str = include_str!("../web/chat.html");
const DASHBOARD_HTML: &str = include_str!("../web/dashboard.html");
const DEMO_CSS: &str = include_str!("../web/demo.css");

/// One embedded file: its bytes, type and a validator computed once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: format!("\"{:016x}\"", crate::fnv1a(body.as_bytes())),
        }
    }

    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let fresh = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == self.etag));
        let mut response = if fresh {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        response
            .insert_header((header::CONTENT_TYPE, self.content_type))
            .insert_header((header::ETAG, self.etag.as_str()))
            // Revalidated on every load: a hub upgrade must reach pages at once.
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("x-content-type-options", "nosniff"));
        if fresh {
            response.finish()
        } else {
            response.body(self.body)
        }
    }
}

/// The routes, for the public listener's `App`.
pub(crate) fn configure(demos: bool) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let js = std::sync::Arc::new(Asset::new(CLIENT_JS, "text/javascript; charset=utf-8"));
    let dts = std::sync::Arc::new(Asset::new(CLIENT_DTS, "text/plain; charset=utf-8"));
    let chat = std::sync::Arc::new(Asset::new(CHAT_HTML, "text/html; charset=utf-8"));
    let dashboard = std::sync::Arc::new(Asset::new(DASHBOARD_HTML, "text/html; charset=utf-8"));
    let css = std::sync::Arc::new(Asset::new(DEMO_CSS, "text/css; charset=utf-8"));
    move |cfg: &mut web::ServiceConfig| {
        let route = |asset: &std::sync::Arc<Asset>| {
            let asset = asset.clone();
            web::get().to(move |req: HttpRequest| {
                let asset = asset.clone();
                async move { asset.respond(&req) }
            })
        };
        cfg.route("/client/switchboard.js", route(&js))
            .route("/client/switchboard.d.ts", route(&dts));
        if demos {
            cfg.route("/demo/chat", route(&chat))
                .route("/demo/dashboard", route(&dashboard))
                .route("/demo/demo.css", route(&css))
                .route(
                    "/demo",
                    web::get().to(|| async {
                        HttpResponse::Found()
                            .insert_header((header::LOCATION, "/demo/chat"))
                            .finish()
                    }),
                );
        }
    }
}

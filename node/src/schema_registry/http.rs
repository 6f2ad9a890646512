//! The REST endpoint: Confluent's Schema Registry API v1 over `tiny_http`, on a few
//! threads of its own (off the shards). Request bodies are bounded
//! ([`MAX_BODY_BYTES`]); every failure is answered with Confluent's error body.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::error::ApiError;
use super::records::Reference;
use super::state::{self, SchemaRequest, SubjectVersion};
use super::Registry;

/// Largest request body read, in bytes (a schema is at most
/// [`state::MAX_SCHEMA_BYTES`], JSON-escaped inside the body).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Threads answering requests.
const WORKERS: usize = 4;
/// Their stacks: room for the recursion of parsing and checking a schema nested as
/// deeply as the parsers allow (JSON: 128 levels).
const WORKER_STACK: usize = 8 << 20;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Serve the registry on `addr` until the process exits; returns the bound address.
pub fn serve(addr: &str, registry: Arc<Registry>) -> anyhow::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("binding the schema registry endpoint {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("schema registry endpoint {addr} is not an IP socket"))?;
    let server = Arc::new(server);
    for n in 0..WORKERS {
        let server = server.clone();
        let registry = registry.clone();
        std::thread::Builder::new()
            .name(format!("spate-sr-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    respond(&registry, request);
                }
            })?;
    }
    Ok(bound)
}

fn respond(registry: &Registry, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_ascii_uppercase();
    let url = request.url().to_string();
    let body = read_body(&mut request);
    let (status, text, content_type) = match body {
        Ok(body) => match handle(registry, &method, &url, &body) {
            Ok(Answer::Json(v)) => (200, v.to_string(), CONTENT_TYPE),
            Ok(Answer::Text(t)) => (200, t, "text/plain; charset=utf-8"),
            Err(e) => (e.status, e.body(), CONTENT_TYPE),
        },
        Err(e) => (e.status, e.body(), CONTENT_TYPE),
    };
    registry.count_answer(status);
    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
        .expect("static header is valid");
    let response = tiny_http::Response::from_string(text)
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}

fn read_body(request: &mut tiny_http::Request) -> Result<Vec<u8>, ApiError> {
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, 400, format!("Error reading the request body: {e}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        413,
        format!("Request body larger than {MAX_BODY_BYTES} bytes"),
    )
}

enum Answer {
    Json(Json),
    /// `.../schema` endpoints: the schema text alone.
    Text(String),
}

fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::new(400, 400, "Malformed percent-encoding in the URL")
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::new(400, 400, "The URL is not UTF-8"))
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Query, ApiError> {
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((percent_decode(k, true)?, percent_decode(v, true)?));
        }
        Ok(Query(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    fn optional_flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v.eq_ignore_ascii_case("true"))
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    schema: Option<String>,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Reference>>,
    #[serde(default)]
    id: Option<i32>,
    #[serde(default)]
    version: Option<i32>,
}

#[derive(Deserialize)]
struct ConfigBody {
    #[serde(default)]
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel", default)]
    compatibility_level: Option<String>,
    #[serde(default)]
    normalize: Option<bool>,
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(400, 400, "Request body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(422, 422, format!("Unprocessable request body: {e}")))
}

fn schema_request(body: &[u8]) -> Result<SchemaRequest, ApiError> {
    let b: SchemaBody = parse_json(body)?;
    Ok(SchemaRequest {
        schema: b
            .schema
            .ok_or_else(|| ApiError::invalid_schema("Invalid schema: the schema is missing"))?,
        schema_type: b.schema_type,
        references: b.references.unwrap_or_default(),
        id: b.id,
        version: b.version,
    })
}

fn schema_id(s: &str) -> Result<i32, ApiError> {
    s.parse::<i32>().map_err(|_| ApiError::schema_not_found())
}

fn schema_fields(v: &SubjectVersion) -> Json {
    let mut o = json!({
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schema": &*v.schema.schema,
    });
    if let Some(t) = v.schema.schema_type.field() {
        o["schemaType"] = json!(t);
    }
    if !v.schema.references.is_empty() {
        o["references"] = json!(v.schema.references);
    }
    o
}

fn not_found() -> ApiError {
    ApiError::new(404, 404, "HTTP 404 Not Found")
}

fn not_allowed() -> ApiError {
    ApiError::new(405, 405, "HTTP 405 Method Not Allowed")
}

fn handle(registry: &Registry, method: &str, url: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query = Query::parse(query)?;
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect::<Result<_, _>>()?;
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = method;
    let json = |v: Json| Ok(Answer::Json(v));
    match seg.as_slice() {
        [] => match m {
            "GET" => json(json!({})),
            _ => Err(not_allowed()),
        },
        ["schemas", "types"] => match m {
            "GET" => json(json!(["JSON", "PROTOBUF", "AVRO"])),
            _ => Err(not_allowed()),
        },
        ["contexts"] => match m {
            "GET" => json(json!(["."])),
            _ => Err(not_allowed()),
        },
        ["schemas"] => match m {
            "GET" => {
                let state = registry.read();
                let all = state.all_versions(
                    query.get("subjectPrefix").unwrap_or(""),
                    query.flag("deleted"),
                    query.flag("latestOnly"),
                );
                json(Json::Array(all.iter().map(schema_fields).collect()))
            }
            _ => Err(not_allowed()),
        },
        ["schemas", "ids", id, rest @ ..] => {
            if m != "GET" {
                return Err(not_allowed());
            }
            let id = schema_id(id)?;
            let state = registry.read();
            let schema = state
                .schema_by_id(id)
                .ok_or_else(|| ApiError::schema_id_not_found(i64::from(id)))?;
            match rest {
                [] => {
                    let mut o = json!({"schema": &*schema.schema});
                    if let Some(t) = schema.schema_type.field() {
                        o["schemaType"] = json!(t);
                    }
                    if !schema.references.is_empty() {
                        o["references"] = json!(schema.references);
                    }
                    json(o)
                }
                ["schema"] => Ok(Answer::Text(schema.schema.to_string())),
                ["subjects"] => {
                    let mut subjects: Vec<String> = state
                        .id_users(id, query.flag("deleted"))
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect();
                    subjects.dedup();
                    json(json!(subjects))
                }
                ["versions"] => {
                    let versions: Vec<Json> = state
                        .id_users(id, query.flag("deleted"))
                        .into_iter()
                        .map(|(s, v)| json!({"subject": s, "version": v}))
                        .collect();
                    json(Json::Array(versions))
                }
                _ => Err(not_found()),
            }
        }
        ["subjects"] => match m {
            "GET" => json(json!(registry.read().subjects(
                query.get("subjectPrefix").unwrap_or(""),
                query.flag("deleted")
            ))),
            _ => Err(not_allowed()),
        },
        ["subjects", subject] => match m {
            "POST" => {
                let request = schema_request(body)?;
                let found = registry.read().lookup(
                    subject,
                    &request,
                    query.optional_flag("normalize"),
                    query.flag("deleted"),
                )?;
                json(schema_fields(&found))
            }
            "DELETE" => {
                let permanent = query.flag("permanent");
                let deleted = registry.change(|s| s.plan_delete_subject(subject, permanent))?;
                json(json!(deleted))
            }
            _ => Err(not_allowed()),
        },
        ["subjects", subject, "versions"] => match m {
            "GET" => json(json!(registry
                .read()
                .versions(subject, query.flag("deleted"))?)),
            "POST" => {
                let request = schema_request(body)?;
                let normalize = query.optional_flag("normalize");
                let (id, version) =
                    registry.change(|s| s.plan_register(subject, &request, normalize))?;
                json(json!({"id": id, "version": version}))
            }
            _ => Err(not_allowed()),
        },
        ["subjects", subject, "versions", version, rest @ ..] => {
            let v = state::parse_version(version)?;
            match (m, rest) {
                ("GET", []) => {
                    let found = registry.read().version(subject, v, query.flag("deleted"))?;
                    json(schema_fields(&found))
                }
                ("GET", ["schema"]) => {
                    let found = registry.read().version(subject, v, query.flag("deleted"))?;
                    Ok(Answer::Text(found.schema.schema.to_string()))
                }
                ("GET", ["referencedby"]) => {
                    let state = registry.read();
                    let found = state.version(subject, v, true)?;
                    json(json!(state.referenced_by(subject, found.version)))
                }
                ("DELETE", []) => {
                    let permanent = query.flag("permanent");
                    let deleted =
                        registry.change(|s| s.plan_delete_version(subject, v, permanent))?;
                    json(json!(deleted))
                }
                (_, [] | ["schema"] | ["referencedby"]) => Err(not_allowed()),
                _ => Err(not_found()),
            }
        }
        ["compatibility", "subjects", subject, "versions", rest @ ..] => {
            if m != "POST" {
                return Err(not_allowed());
            }
            let version = match rest {
                [] => None,
                [v] => Some(state::parse_version(v)?),
                _ => return Err(not_found()),
            };
            let request = schema_request(body)?;
            let messages = registry.read().test_compatibility(
                subject,
                version,
                &request,
                query.optional_flag("normalize"),
            )?;
            let mut o = json!({"is_compatible": messages.is_empty()});
            if query.flag("verbose") {
                o["messages"] = json!(messages);
            }
            json(o)
        }
        ["config"] | ["config", _] => {
            let subject = seg.get(1).copied();
            match m {
                "GET" => {
                    let state = registry.read();
                    let config = match subject {
                        None => state.config(None).cloned().unwrap_or_default(),
                        Some(s) => match state.config(Some(s)) {
                            Some(c) => c.clone(),
                            None if query.flag("defaultToGlobal") => {
                                state.config(None).cloned().unwrap_or_default()
                            }
                            None => return Err(ApiError::no_subject_config(s)),
                        },
                    };
                    let mut o = json!({
                        "compatibilityLevel": config
                            .compatibility_level
                            .unwrap_or_else(|| state::DEFAULT_COMPATIBILITY.to_string())
                    });
                    if let Some(n) = config.normalize {
                        o["normalize"] = json!(n);
                    }
                    json(o)
                }
                "PUT" => {
                    let b: ConfigBody = parse_json(body)?;
                    let level = b.compatibility.or(b.compatibility_level);
                    let config = registry
                        .change(|s| s.plan_config(subject, level.as_deref(), b.normalize))?;
                    let mut o = json!({});
                    if let Some(l) = config.compatibility_level {
                        o["compatibility"] = json!(l);
                    }
                    if let Some(n) = config.normalize {
                        o["normalize"] = json!(n);
                    }
                    json(o)
                }
                "DELETE" => {
                    let old = registry.change(|s| s.plan_delete_config(subject))?;
                    let mut o = json!({
                        "compatibilityLevel": old
                            .compatibility_level
                            .unwrap_or_else(|| state::DEFAULT_COMPATIBILITY.to_string())
                    });
                    if let Some(n) = old.normalize {
                        o["normalize"] = json!(n);
                    }
                    json(o)
                }
                _ => Err(not_allowed()),
            }
        }
        ["mode"] | ["mode", _] => {
            let subject = seg.get(1).copied();
            match m {
                "GET" => {
                    let state = registry.read();
                    let mode = match subject {
                        None => state
                            .mode(None)
                            .cloned()
                            .unwrap_or_else(|| state::DEFAULT_MODE.to_string()),
                        Some(s) => match state.mode(Some(s)) {
                            Some(mode) => mode.clone(),
                            None if query.flag("defaultToGlobal") => state.effective_mode(s),
                            None => return Err(ApiError::no_subject_mode(s)),
                        },
                    };
                    json(json!({"mode": mode}))
                }
                "PUT" => {
                    let b: ModeBody = parse_json(body)?;
                    let force = query.flag("force");
                    let mode = registry.change(|s| s.plan_mode(subject, &b.mode, force))?;
                    json(json!({"mode": mode}))
                }
                "DELETE" => {
                    let old = registry.change(|s| s.plan_delete_mode(subject))?;
                    json(json!({"mode": old}))
                }
                _ => Err(not_allowed()),
            }
        }
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_decode() {
        assert_eq!(percent_decode("a%2Fb", false).unwrap(), "a/b");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz", false).err().unwrap().status, 400);
        assert_eq!(percent_decode("%ff", false).err().unwrap().status, 400);
        let q = Query::parse("permanent=true&normalize=False&x").unwrap();
        assert!(q.flag("permanent"));
        assert_eq!(q.optional_flag("normalize"), Some(false));
        assert_eq!(q.optional_flag("verbose"), None);
    }

    #[test]
    fn bodies_are_checked() {
        assert_eq!(schema_request(b"").err().unwrap().status, 400);
        assert_eq!(schema_request(b"{").err().unwrap().code, 422);
        assert_eq!(schema_request(b"{}").err().unwrap().code, 42201);
        let r = schema_request(br#"{"schema":"\"string\"","schemaType":"AVRO"}"#).unwrap();
        assert_eq!(r.schema, "\"string\"");
    }
}

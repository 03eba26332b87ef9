//! An OTLP/HTTP receiver for the traces test and the scheduler bench: a
//! loopback port that answers every export with 200, decodes it with the
//! protocol's own message types (`opentelemetry-proto`) and keeps the spans.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// A span as received, with the resource it came with.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub resource: HashMap<String, String>,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(text(value))
}

pub fn text(value: &AnyValue) -> String {
    match value.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver on a free loopback port: answers every POST to
/// /v1/traces with 200 and keeps the spans it decoded.
pub struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
    /// The path of every export.
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (kept, seen) = (spans.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (kept, seen) = (kept.clone(), seen.clone());
                std::thread::spawn(move || serve_connection(stream, &kept, &seen));
            }
        });
        Collector { port, spans, paths }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received satisfy `done`.
    pub fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; spans: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.span.name, s.attr("cronwerk.task")))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Requests on one connection (the exporter keeps it alive).
fn serve_connection(stream: TcpStream, kept: &Mutex<Vec<Received>>, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        seen.lock().unwrap().push(path);
        let request = ExportTraceServiceRequest::decode(&body[..])
            .expect("the export is an ExportTraceServiceRequest");
        for resource_spans in request.resource_spans {
            let resource: HashMap<String, String> = resource_spans
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?))))
                        .collect()
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.lock().unwrap().push(Received {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

//! The HTTP client the OTLP exporter posts with: ureq, a blocking client. The SDK's batching
//! processor exports from its own thread (driving the export future there with a plain
//! executor), so a blocking call stalls nothing else, needs no async runtime — the exporter
//! keeps working while the process's tokio runtime shuts down — and adds no second HTTP stack
//! to the build.

use std::io::Read;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// The most of a collector's answer that is read: the exporter only looks at the status and
/// at a partial-success message.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// A blocking HTTP client with one deadline per request.
#[derive(Debug)]
pub(crate) struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut call = self
            .agent
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            call = call.set(name.as_str(), value.to_str()?);
        }
        // A status of 4xx or 5xx is an answer, for the exporter to judge, not a failure here.
        let answer = match call.send_bytes(&body) {
            Ok(answer) | Err(ureq::Error::Status(_, answer)) => answer,
            Err(error) => return Err(Box::new(error)),
        };
        let mut response = Response::builder().status(answer.status());
        for name in answer.headers_names() {
            if let Some(value) = answer.header(&name) {
                response = response.header(name.as_str(), value);
            }
        }
        let mut bytes = Vec::new();
        answer
            .into_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)?;
        Ok(response.body(Bytes::from(bytes))?)
    }
}

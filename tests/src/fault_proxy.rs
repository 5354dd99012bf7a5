//! A fault-injecting AWS for the tests: an HTTP proxy between Shoal's SDK clients and the
//! emulators, reached through the SDK's standard `AWS_ENDPOINT_URL*` settings, so the
//! product runs no test-only code path.
//!
//! The emulators are perfect: instantly consistent, never throttled, never down. This proxy
//! makes them behave like AWS on a bad day. Each call's service comes from the SigV4
//! credential scope in its `Authorization` header, and its operation from `X-Amz-Target`
//! (SQS and DynamoDB, JSON protocol) or the form field `Action` (SNS and EC2, query
//! protocol). A test
//! programs [`Rule`]s that answer with AWS errors in each protocol's own shape, delay,
//! reset the connection, truncate the answer after the call went through, or fail some
//! entries of a batch call; and it can make EC2 eventually consistent, hiding what was just
//! created from later calls for a window, the way AWS documents it, and keep listing a
//! snapshot for a while after it was deleted. Every call is counted
//! per operation, and the bodies of EC2 create calls that went through are kept, so a test
//! can count the effects one job had.
//!
//! Where the emulator is laxer than AWS, the proxy restores AWS's rule: DynamoDB calls reach
//! moto one at a time, since moto lets two simultaneous conditional writes of one item both
//! succeed, which DynamoDB never does. Where it is slower than AWS by its design, the proxy
//! keeps AWS's cost: moto copies a whole table for every `TransactWriteItems` (a ledger of
//! thousands of records makes each outcome batch take seconds), so a transaction of puts is
//! carried out here as the conditional `PutItem`s it is made of, rolled back if any condition
//! fails, and answered as DynamoDB answers it, while no other DynamoDB call runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The AWS service a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Sqs,
    Sns,
    Ec2,
    /// The job ledger's table.
    DynamoDb,
    Other,
}

/// An AWS error answer, in the shape and with the code the service really uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFault {
    /// SQS `ThrottlingException`, SNS `Throttling`, EC2 `RequestLimitExceeded`.
    Throttling,
    /// `InternalError` (SQS: `InternalFailure`), HTTP 500.
    InternalError,
    /// `ServiceUnavailable` (EC2: `Unavailable`), HTTP 503.
    ServiceUnavailable,
    /// A bare HTTP 500 with no AWS error body, as a load balancer in front would answer.
    Http500,
    /// A bare HTTP 503.
    Http503,
    /// The caller's policy does not allow the call: SQS `AccessDenied`, SNS
    /// `AuthorizationError`, EC2 `UnauthorizedOperation`; HTTP 403.
    AccessDenied,
    /// EC2's `IncorrectInstanceState` (HTTP 400): the instance is not in the state the call
    /// needs yet (still `pending`, say); nothing was done.
    IncorrectInstanceState,
    /// The request itself is refused, for good: SNS `InvalidParameter` (a message attribute
    /// SNS will not take, a message over its size), HTTP 400, the sender's fault. SNS
    /// refuses a whole `PublishBatch` this way for one bad entry, where moto takes it.
    InvalidParameter,
}

/// What the proxy does to a call a rule matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this error; the call does not reach the emulator.
    Error(AwsFault),
    /// Answer with one of these errors, chosen at random.
    AnyError(Vec<AwsFault>),
    /// Wait this long, then pass the call on.
    Delay(Duration),
    /// Close the connection without an answer; the call does not reach the emulator.
    Reset,
    /// Pass the call on (it takes effect), then cut the answer off halfway.
    Truncate,
    /// Pass the call on (it takes effect), then hold the answer back this long: a caller
    /// that stops waiting meanwhile never learns how it ended.
    DelayAnswer(Duration),
    /// For batch calls: pass on only the even-numbered entries and report the others failed
    /// through no fault of the sender (`InternalError`, `SenderFault` false).
    FailOddEntries,
    /// Pass the call on, then answer with every `from` in the answer replaced by `to`: AWS
    /// saying what the emulator cannot be made to (a snapshot another account shared).
    RewriteAnswer { from: String, to: String },
}

/// When a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    Always,
    /// Each matching call, with this probability.
    Probability(f64),
    /// The next N matching calls.
    Next(u32),
    /// Every matching call until this instant: an outage.
    Until(Instant),
    /// Let `skip` matching calls through, then fire on the next `count`.
    After {
        skip: u32,
        count: u32,
    },
}

/// One programmed fault: which calls, what, and when.
#[derive(Debug, Clone)]
pub struct Rule {
    pub service: Option<Service>,
    /// Operation names (`PublishBatch`, `RunInstances`); empty means every operation.
    pub operations: Vec<String>,
    pub fault: Fault,
    pub trigger: Trigger,
    /// Only calls on the SQS queue whose URL ends with this name (e.g. the dead-letter
    /// queue's), when set.
    pub queue: Option<String>,
    /// Only calls one of whose form fields (the query protocol: SNS, EC2), or whose JSON
    /// body (SQS, DynamoDB), contains this text, when set: the one bad entry of a batch.
    pub containing: Option<String>,
}

impl Rule {
    pub fn new(
        service: Option<Service>,
        operations: &[&str],
        fault: Fault,
        trigger: Trigger,
    ) -> Self {
        Rule {
            service,
            operations: operations.iter().map(|s| (*s).to_owned()).collect(),
            fault,
            trigger,
            queue: None,
            containing: None,
        }
    }

    /// The same rule, for calls with a form field (or a JSON body) containing `text` alone.
    pub fn containing(mut self, text: &str) -> Self {
        self.containing = Some(text.to_owned());
        self
    }

    /// The same rule, for calls on the SQS queue named `name` alone.
    pub fn on_queue(mut self, name: &str) -> Self {
        self.queue = Some(name.to_owned());
        self
    }

    /// `service`'s `operations` fail with `fault` for `duration` from now.
    pub fn outage(
        service: Service,
        operations: &[&str],
        fault: AwsFault,
        duration: Duration,
    ) -> Self {
        Rule::new(
            Some(service),
            operations,
            Fault::Error(fault),
            Trigger::Until(Instant::now() + duration),
        )
    }

    fn matches(&self, call: &Call) -> bool {
        self.service.is_none_or(|s| s == call.service)
            && (self.operations.is_empty() || self.operations.contains(&call.operation))
            && self.queue.as_deref().is_none_or(|name| {
                call.queue_url
                    .as_deref()
                    .is_some_and(|url| url.trim_end_matches('/').rsplit('/').next() == Some(name))
            })
            && self.containing.as_deref().is_none_or(|text| {
                call.json.contains(text) || call.form.iter().any(|(_, v)| v.contains(text))
            })
    }
}

/// Calls of one operation: how many arrived, and how many reached the emulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCount {
    pub arrived: u64,
    pub forwarded: u64,
    pub faulted: u64,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    counts: HashMap<(Service, String), CallCount>,
    /// Bodies of EC2 create calls that reached the emulator, by operation.
    creates: Vec<(String, String)>,
    /// EC2 eventual consistency: how long a new resource stays hidden, and how long a new
    /// tag stays invisible to `tag:` filters.
    hide_new_resources: Duration,
    hide_new_tags: Duration,
    /// How long a new snapshot reads `pending` before `completed`.
    snapshot_duration: Duration,
    /// Snapshot id → when it was created.
    snapshots_created: HashMap<String, Instant>,
    /// Resource id → until when it is hidden.
    hidden: HashMap<String, Instant>,
    /// Resource id → until when its newest tags are invisible to `tag:` filters.
    tag_lag: HashMap<String, Instant>,
    /// How long a deleted snapshot stays listed.
    linger_deleted: Duration,
    /// Snapshot id → its `<item>` as last listed, and the calls (by [`Call::listing`]) that
    /// listed it: a deleted snapshot lingers in the answers to those calls alone.
    listed_snapshots: HashMap<String, (String, std::collections::HashSet<String>)>,
    /// Snapshot id → until when it is still listed, deleted.
    deleted: HashMap<String, Instant>,
    rng: u64,
}

impl State {
    /// The counts of `call`'s operation.
    fn count_of(&mut self, call: &Call) -> &mut CallCount {
        self.counts
            .entry((call.service, call.operation.clone()))
            .or_default()
    }

    fn chance(&mut self, p: f64) -> bool {
        // xorshift64*: enough randomness for fault injection, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A running fault proxy. Dropping it stops it.
pub struct FaultProxy {
    /// Where to point the SDK (`AWS_ENDPOINT_URL`).
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

struct Upstreams {
    default: String,
    by_service: HashMap<Service, String>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// DynamoDB calls go to the emulator one at a time: moto evaluates two conditional
    /// writes that arrive together against the same old item (both claims of one job id
    /// win), where DynamoDB makes each conditional write atomic on its item.
    dynamodb_one_at_a_time: tokio::sync::Mutex<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port passing every call to `upstream`.
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::start_with(upstream, HashMap::new()).await
    }

    /// A proxy passing each service's calls to its own emulator (e.g. SQS and SNS to
    /// fauxqs, EC2 to moto), the rest to `default`.
    pub async fn start_with(default: &str, by_service: HashMap<Service, String>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        let state = Arc::new(Mutex::new(State {
            rng: seed,
            ..State::default()
        }));
        let upstreams = Arc::new(Upstreams {
            default: default.trim_end_matches('/').to_owned(),
            by_service: by_service
                .into_iter()
                .map(|(s, u)| (s, u.trim_end_matches('/').to_owned()))
                .collect(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            dynamodb_one_at_a_time: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(serve(listener, state.clone(), upstreams));
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// The SDK configuration a worker uses to reach AWS through this proxy.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        crate::sdk_config(&self.endpoint).await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; rules are tried in the order added, and the first that fires applies.
    pub fn add(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    /// Removes every rule: AWS is healthy again.
    pub fn heal(&self) {
        self.state().rules.clear();
    }

    /// Makes EC2 eventually consistent: what `RunInstances`, `CreateImage`,
    /// `CreateSnapshot` and `CreateVolume` create stays invisible for `window` (`Describe*`
    /// lists leave it out, a call naming it answers `…NotFound`), and tags set by
    /// `CreateTags` or a create's tag specification are invisible to `tag:` filters for
    /// `tags_window`.
    pub fn eventual_consistency(&self, window: Duration, tags_window: Duration) {
        let mut s = self.state();
        s.hide_new_resources = window;
        s.hide_new_tags = tags_window;
    }

    /// Makes deleting a snapshot eventually consistent: for `window` after a `DeleteSnapshot`
    /// went through, `DescribeSnapshots` calls that listed it before still list it (as AWS
    /// may), while EC2 itself has it gone (a call naming it answers
    /// `InvalidSnapshot.NotFound`).
    pub fn lingering_deletes(&self, window: Duration) {
        self.state().linger_deleted = window;
    }

    /// Makes new snapshots take `duration` to complete, as on AWS (the emulator completes
    /// them at once): until then every answer shows them `pending`.
    pub fn slow_snapshots(&self, duration: Duration) {
        self.state().snapshot_duration = duration;
    }

    pub fn count(&self, service: Service, operation: &str) -> CallCount {
        self.state()
            .counts
            .get(&(service, operation.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// How many calls of EC2 `operation` that reached the emulator had a parameter equal to
    /// `value` (e.g. a job id in a tag specification).
    pub fn creates_with(&self, operation: &str, value: &str) -> usize {
        self.state()
            .creates
            .iter()
            .filter(|(op, body)| {
                op == operation && form_urlencoded::parse(body.as_bytes()).any(|(_, v)| v == value)
            })
            .count()
    }

    /// The parameters of each call of EC2 `operation` that reached the emulator, as sent:
    /// what a test asserts of a request when the emulator ignores part of it.
    pub fn creates(&self, operation: &str) -> Vec<HashMap<String, String>> {
        self.state()
            .creates
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, body)| {
                form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect()
            })
            .collect()
    }

    /// Calls that got an injected fault, over all operations.
    pub fn faults_injected(&self) -> u64 {
        self.state().counts.values().map(|c| c.faulted).sum()
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>, up: Arc<Upstreams>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let up = up.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let up = up.clone();
                // A task of its own: a caller that dies mid-call (a SIGKILLed worker) drops
                // the connection, but the call it made still reaches the emulator, takes
                // effect, and is counted, as on AWS.
                let call = tokio::spawn(async move { handle(req, &state, &up).await });
                async move { call.await.map_err(std::io::Error::other)? }
            });
            // A reset fault ends the connection with an error; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The access key a test signs its own calls with: the proxy passes them on untouched and
/// uncounted, so a test can watch the truth while the worker lives through the faults.
pub const OBSERVER_KEY: &str = "observer";

/// A call as the proxy reads it.
struct Call {
    service: Service,
    operation: String,
    /// Signed with [`OBSERVER_KEY`].
    observer: bool,
    /// The query protocol's form fields (SNS, EC2); empty for JSON.
    form: Vec<(String, String)>,
    /// The JSON protocol's body (SQS, DynamoDB); empty for the query protocol.
    json: String,
    /// The SQS queue the call is on, when it names one.
    queue_url: Option<String>,
    /// The region of its credential scope.
    region: String,
}

impl Call {
    /// What a `Describe*` call asks for, whatever page: its region and its parameters but
    /// the paging ones.
    fn listing(&self) -> String {
        let mut params: Vec<String> = self
            .form
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "Version" | "NextToken" | "MaxResults"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        params.sort();
        format!("{}?{}", self.region, params.join("&"))
    }
}

fn read_call(req: &hyper::http::request::Parts, body: &[u8]) -> Call {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let authorization = header("authorization");
    let credential = authorization
        .split("Credential=")
        .nth(1)
        .unwrap_or_default();
    let observer = credential.split('/').next() == Some(OBSERVER_KEY);
    let region = credential.split('/').nth(2).unwrap_or_default().to_owned();
    let scope_service = credential.split('/').nth(3).unwrap_or_default().to_owned();
    let service = match scope_service.as_str() {
        "sqs" => Service::Sqs,
        "sns" => Service::Sns,
        "ec2" => Service::Ec2,
        "dynamodb" => Service::DynamoDb,
        _ => Service::Other,
    };
    let target = header("x-amz-target");
    let form: Vec<(String, String)> = if target.is_empty() {
        form_urlencoded::parse(body).into_owned().collect()
    } else {
        Vec::new()
    };
    let operation = match target.rsplit_once('.') {
        Some((_, op)) => op.to_owned(),
        None => form
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
    };
    let queue_url = if target.is_empty() {
        form.iter()
            .find(|(k, _)| k == "QueueUrl")
            .map(|(_, v)| v.clone())
    } else {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("QueueUrl")?.as_str().map(str::to_owned))
    };
    let json = if target.is_empty() {
        String::new()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    Call {
        service,
        operation,
        observer,
        form,
        json,
        queue_url,
        region,
    }
}

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    req: Request<Incoming>,
    state: &Mutex<State>,
    up: &Upstreams,
) -> Result<Response<ProxyBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let call = read_call(&parts, &body);
    let fault = if call.observer {
        None
    } else {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.count_of(&call).arrived += 1;
        choose_fault(&mut s, &call)
    };
    let fault = match fault {
        Some(Fault::AnyError(choices)) if !choices.is_empty() => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let i = (0..choices.len())
                .find(|_| s.chance(1.0 / choices.len() as f64))
                .unwrap_or(choices.len() - 1);
            Some(Fault::Error(choices[i]))
        }
        other => other,
    };
    if fault.is_some() && !matches!(fault, Some(Fault::Delay(_))) {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.count_of(&call).faulted += 1;
    }
    match &fault {
        Some(Fault::Error(e)) => return Ok(error_response(call.service, *e, &call.operation)),
        Some(Fault::Reset) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    if call.service == Service::Ec2 && !call.observer {
        if let Some(answer) = hidden_by_consistency(state, &call) {
            return Ok(answer);
        }
    }

    let (body, failed_entries) = match fault {
        Some(Fault::FailOddEntries) => split_batch(&call, &body),
        _ => (body, Vec::new()),
    };
    let upstream = up
        .by_service
        .get(&call.service)
        .unwrap_or(&up.default)
        .clone();
    if call.service == Service::DynamoDb && call.operation == "TransactWriteItems" {
        if let Some(answer) = transact_as_puts(up, &upstream, &parts, &body).await? {
            if !call.observer {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.count_of(&call).forwarded += 1;
            }
            return Ok(answer);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let forward = forward
        .body(Full::new(body.clone()))
        .map_err(std::io::Error::other)?;
    let one_at_a_time = match call.service {
        Service::DynamoDb => Some(up.dynamodb_one_at_a_time.lock().await),
        _ => None,
    };
    let response = up
        .client
        .request(forward)
        .await
        .map_err(std::io::Error::other)?;
    drop(one_at_a_time);
    let (mut rparts, rbody) = response.into_parts();
    let rbody = rbody
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    if !call.observer {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.count_of(&call).forwarded += 1;
        if call.service == Service::Ec2 && rparts.status.is_success() {
            record_ec2_effects(&mut s, &call, &body, &rbody);
        }
    }
    rparts.headers.remove("content-length");
    rparts.headers.remove("transfer-encoding");
    let rbody = if call.service == Service::Ec2 && !call.observer {
        filter_hidden(state, &call, rbody)
    } else {
        rbody
    };
    let rbody = if failed_entries.is_empty() {
        rbody
    } else {
        report_failed_entries(&call, &rbody, &failed_entries)
    };
    let rbody = match &fault {
        Some(Fault::RewriteAnswer { from, to }) => Bytes::from(
            String::from_utf8_lossy(&rbody)
                .replace(from.as_str(), to)
                .into_bytes(),
        ),
        _ => rbody,
    };
    if let Some(Fault::DelayAnswer(d)) = fault {
        tokio::time::sleep(d).await;
    }
    if fault == Some(Fault::Truncate) {
        // The call took effect; the caller never learns how it ended.
        let half = rbody.slice(..rbody.len() / 2);
        rparts.headers.insert(
            "content-length",
            rbody
                .len()
                .to_string()
                .parse()
                .map_err(std::io::Error::other)?,
        );
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected truncation",
            )),
        ];
        let stream = StreamBody::new(futures::stream::iter(frames));
        return Ok(Response::from_parts(rparts, BodyExt::boxed(stream)));
    }
    Ok(Response::from_parts(rparts, full(rbody)))
}

/// One DynamoDB call to the emulator, signed as `parts` was: its status and JSON answer.
async fn dynamodb_call(
    up: &Upstreams,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    operation: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), std::io::Error> {
    let mut request = Request::builder()
        .method("POST")
        .uri(format!("{upstream}/"));
    for (name, value) in &parts.headers {
        if name != "content-length" && name != "x-amz-target" {
            request = request.header(name, value);
        }
    }
    let request = request
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(std::io::Error::other)?;
    let response = up
        .client
        .request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// A `TransactWriteItems` of puts alone, carried out as conditional `PutItem`s while no other
/// DynamoDB call runs: each put in turn, and if any condition fails, every put made undone
/// (the old item put back, or the new one deleted) and the transaction answered cancelled
/// with a reason per item, `ConditionalCheckFailed` or `None`, as DynamoDB answers it.
/// `None` for a transaction of anything else, which the emulator is given as it is.
async fn transact_as_puts(
    up: &Upstreams,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Result<Option<Response<ProxyBody>>, std::io::Error> {
    use serde_json::{json, Value};
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    let Some(items) = request.get("TransactItems").and_then(Value::as_array) else {
        return Ok(None);
    };
    let puts: Vec<&Value> = items.iter().filter_map(|i| i.get("Put")).collect();
    if puts.len() != items.len() {
        return Ok(None);
    }
    let _one_at_a_time = up.dynamodb_one_at_a_time.lock().await;
    // (table, the item put, what it replaced) of each put made.
    let mut made: Vec<(String, Value, Option<Value>)> = Vec::new();
    let mut reasons = Vec::new();
    let mut cancelled = false;
    for put in puts {
        let mut call = put.clone();
        call["ReturnValues"] = json!("ALL_OLD");
        let (status, answer) = dynamodb_call(up, upstream, parts, "PutItem", &call).await?;
        let table = put["TableName"].as_str().unwrap_or_default().to_owned();
        if status == 200 {
            made.push((
                table,
                put["Item"].clone(),
                answer.get("Attributes").cloned(),
            ));
            reasons.push(json!({"Code": "None"}));
        } else if answer["__type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ConditionalCheckFailedException"))
        {
            cancelled = true;
            reasons.push(json!({"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}));
        } else {
            // Anything else the emulator says of a put is the transaction's answer.
            undo(up, upstream, parts, &made).await?;
            return Ok(Some(dynamodb_answer(status, &answer)));
        }
    }
    if !cancelled {
        return Ok(Some(dynamodb_answer(200, &json!({}))));
    }
    undo(up, upstream, parts, &made).await?;
    let codes: Vec<&str> = reasons
        .iter()
        .map(|r| r["Code"].as_str().unwrap_or("None"))
        .collect();
    let answer = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    });
    Ok(Some(dynamodb_answer(400, &answer)))
}

/// Undoes the puts a cancelled transaction made, newest first.
async fn undo(
    up: &Upstreams,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    made: &[(String, serde_json::Value, Option<serde_json::Value>)],
) -> Result<(), std::io::Error> {
    use serde_json::json;
    for (table, item, old) in made.iter().rev() {
        match old {
            Some(old) => {
                let put = json!({"TableName": table, "Item": old});
                dynamodb_call(up, upstream, parts, "PutItem", &put).await?;
            }
            None => {
                let described = dynamodb_call(
                    up,
                    upstream,
                    parts,
                    "DescribeTable",
                    &json!({"TableName": table}),
                )
                .await?
                .1;
                let key: serde_json::Map<String, serde_json::Value> = described["Table"]
                    ["KeySchema"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k["AttributeName"].as_str())
                    .map(|name| (name.to_owned(), item[name].clone()))
                    .collect();
                let delete = json!({"TableName": table, "Key": key});
                dynamodb_call(up, upstream, parts, "DeleteItem", &delete).await?;
            }
        }
    }
    Ok(())
}

fn dynamodb_answer(status: u16, body: &serde_json::Value) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "00000000-0000-0000-0000-000000000000")
        .body(full(body.to_string()))
        .unwrap_or_else(|_| bare(500))
}

fn choose_fault(s: &mut State, call: &Call) -> Option<Fault> {
    let now = Instant::now();
    for i in 0..s.rules.len() {
        if !s.rules[i].matches(call) {
            continue;
        }
        let fire = match s.rules[i].trigger.clone() {
            Trigger::Always => true,
            Trigger::Probability(p) => s.chance(p),
            Trigger::Next(0) => false,
            Trigger::Next(n) => {
                s.rules[i].trigger = Trigger::Next(n - 1);
                true
            }
            Trigger::Until(t) => now < t,
            Trigger::After { skip: 0, count: 0 } => false,
            Trigger::After { skip: 0, count } => {
                s.rules[i].trigger = Trigger::After {
                    skip: 0,
                    count: count - 1,
                };
                true
            }
            Trigger::After { skip, count } => {
                s.rules[i].trigger = Trigger::After {
                    skip: skip - 1,
                    count,
                };
                false
            }
        };
        if fire {
            return Some(s.rules[i].fault.clone());
        }
    }
    None
}

/// An AWS error as `service` writes it.
fn error_response(service: Service, fault: AwsFault, operation: &str) -> Response<ProxyBody> {
    let (status, code) = match (service, fault) {
        (_, AwsFault::Http500) => return bare(500),
        (_, AwsFault::Http503) => return bare(503),
        (Service::Sqs, AwsFault::Throttling) => (400, "ThrottlingException"),
        (Service::DynamoDb, AwsFault::Throttling) => (400, "ThrottlingException"),
        (Service::Sns, AwsFault::Throttling) => (400, "Throttling"),
        (_, AwsFault::Throttling) => (503, "RequestLimitExceeded"),
        (Service::Sqs, AwsFault::InternalError) => (500, "InternalFailure"),
        (Service::DynamoDb, AwsFault::InternalError) => (500, "InternalServerError"),
        (_, AwsFault::InternalError) => (500, "InternalError"),
        (Service::Ec2, AwsFault::ServiceUnavailable) => (503, "Unavailable"),
        (_, AwsFault::ServiceUnavailable) => (503, "ServiceUnavailable"),
        (Service::Sqs, AwsFault::AccessDenied) => (403, "AccessDenied"),
        (Service::DynamoDb, AwsFault::AccessDenied) => (400, "AccessDeniedException"),
        (Service::Ec2, AwsFault::AccessDenied) => (403, "UnauthorizedOperation"),
        (_, AwsFault::AccessDenied) => (403, "AuthorizationError"),
        (_, AwsFault::IncorrectInstanceState) => (400, "IncorrectInstanceState"),
        (Service::DynamoDb, AwsFault::InvalidParameter) => (400, "ValidationException"),
        (Service::Sqs, AwsFault::InvalidParameter) => (400, "InvalidParameterValue"),
        (_, AwsFault::InvalidParameter) => (400, "InvalidParameter"),
    };
    let message = format!("injected {code} for {operation}");
    aws_error(service, status, code, &message)
}

fn aws_error(service: Service, status: u16, code: &str, message: &str) -> Response<ProxyBody> {
    let request_id = "00000000-0000-0000-0000-000000000000";
    let builder = Response::builder().status(status);
    let response = match service {
        Service::Sqs => builder
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-requestid", request_id)
            .header("x-amzn-query-error", format!("{code};Sender"))
            .body(full(
                serde_json::json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message})
                    .to_string(),
            )),
        // The JSON protocol, as DynamoDB writes its errors.
        Service::DynamoDb => builder
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-requestid", request_id)
            .body(full(
                serde_json::json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message})
                    .to_string(),
            )),
        Service::Ec2 => builder.header("content-type", "text/xml").body(full(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ))),
        _ => builder.header("content-type", "text/xml").body(full(format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ))),
    };
    response.unwrap_or_else(|_| bare(500))
}

fn bare(status: u16) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

// ---- Partial batch failures -------------------------------------------------------------

/// The batch body with only its even-numbered entries, and the ids of the entries left out.
fn split_batch(call: &Call, body: &Bytes) -> (Bytes, Vec<String>) {
    match call.service {
        Service::Sqs => {
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return (body.clone(), Vec::new());
            };
            let Some(entries) = v.get_mut("Entries").and_then(|e| e.as_array_mut()) else {
                return (body.clone(), Vec::new());
            };
            if entries.len() < 2 {
                return (body.clone(), Vec::new());
            }
            let mut kept = Vec::new();
            let mut failed = Vec::new();
            for (i, entry) in entries.drain(..).enumerate() {
                if i % 2 == 0 {
                    kept.push(entry);
                } else {
                    failed.push(entry["Id"].as_str().unwrap_or_default().to_owned());
                }
            }
            *entries = kept;
            (Bytes::from(v.to_string()), failed)
        }
        Service::Sns if call.operation == "PublishBatch" => {
            // PublishBatchRequestEntries.member.N.<field>: keep odd N (1-based: the even
            // 0-based positions), renumbered.
            let prefix = "PublishBatchRequestEntries.member.";
            let count = call
                .form
                .iter()
                .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(".Id"))
                .count();
            if count < 2 {
                return (body.clone(), Vec::new());
            }
            let mut out = form_urlencoded::Serializer::new(String::new());
            let mut failed = Vec::new();
            for (k, v) in &call.form {
                let Some(rest) = k.strip_prefix(prefix) else {
                    out.append_pair(k, v);
                    continue;
                };
                let (n, field) = rest.split_once('.').unwrap_or((rest, ""));
                let n: usize = n.parse().unwrap_or(1);
                if n % 2 == 1 {
                    out.append_pair(&format!("{prefix}{}.{field}", n.div_ceil(2)), v);
                } else if field == "Id" {
                    failed.push(v.clone());
                }
            }
            (Bytes::from(out.finish()), failed)
        }
        _ => (body.clone(), Vec::new()),
    }
}

fn report_failed_entries(call: &Call, body: &Bytes, failed: &[String]) -> Bytes {
    match call.service {
        Service::Sqs => {
            let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return body.clone();
            };
            let list: Vec<serde_json::Value> = failed
                .iter()
                .map(|id| serde_json::json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "injected entry failure"}))
                .collect();
            match v.get_mut("Failed").and_then(|f| f.as_array_mut()) {
                Some(existing) => existing.extend(list),
                None => v["Failed"] = serde_json::Value::Array(list),
            }
            Bytes::from(v.to_string())
        }
        _ => {
            let members: String = failed
                .iter()
                .map(|id| format!("<member><Id>{id}</Id><Code>InternalError</Code><Message>injected entry failure</Message><SenderFault>false</SenderFault></member>"))
                .collect();
            let text = String::from_utf8_lossy(body);
            let text = if text.contains("<Failed/>") {
                text.replacen("<Failed/>", &format!("<Failed>{members}</Failed>"), 1)
            } else if text.contains("<Failed>") {
                text.replacen("<Failed>", &format!("<Failed>{members}"), 1)
            } else {
                text.replacen(
                    "</PublishBatchResult>",
                    &format!("<Failed>{members}</Failed></PublishBatchResult>"),
                    1,
                )
            };
            Bytes::from(text)
        }
    }
}

// ---- EC2 eventual consistency -----------------------------------------------------------

const ID_PREFIXES: &[&str] = &["i-", "ami-", "snap-", "vol-"];

/// Resource ids (`i-…`, `ami-…`, `snap-…`, `vol-…`) that appear in `text` between tags.
fn ids_in(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for piece in text.split(['<', '>', '"', '&', '=']) {
        let piece = piece.trim();
        if ID_PREFIXES.iter().any(|p| {
            piece
                .strip_prefix(p)
                .is_some_and(|hex| hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        }) {
            ids.push(piece.to_owned());
        }
    }
    ids
}

fn record_ec2_effects(s: &mut State, call: &Call, request: &Bytes, response: &Bytes) {
    let op = call.operation.as_str();
    // A create is named for what it makes (`CreateVolume`, `CopySnapshot`, `RegisterImage`,
    // `RunInstances`), so a new create kind is counted with no line here.
    let is_create = ["Create", "Copy", "Register", "Run"]
        .iter()
        .any(|verb| op.starts_with(verb));
    if is_create {
        s.creates.push((
            call.operation.clone(),
            String::from_utf8_lossy(request).into_owned(),
        ));
    }
    let now = Instant::now();
    if op == "DeleteSnapshot" && !s.linger_deleted.is_zero() {
        let until = now + s.linger_deleted;
        for (k, v) in &call.form {
            if k == "SnapshotId" {
                s.deleted.insert(v.clone(), until);
            }
        }
    }
    let text = String::from_utf8_lossy(response);
    // What the call created, not every id its answer names: a snapshot's answer names its
    // volume, a launch's its AMI, and those existed before. (`CreateTags` makes nothing.)
    let made: &[&str] = match op {
        _ if !is_create => &[],
        "RunInstances" => &["i-", "vol-"],
        _ if op.ends_with("Image") => &["ami-"],
        _ if op.ends_with("Snapshot") || op.ends_with("Snapshots") => &["snap-"],
        _ if op.ends_with("Volume") => &["vol-"],
        _ => &[],
    };
    let created: Vec<String> = ids_in(&text)
        .into_iter()
        .filter(|id| made.iter().any(|p| id.starts_with(p)))
        .collect();
    if op == "CreateSnapshot" {
        for id in &created {
            s.snapshots_created.insert(id.clone(), now);
        }
    }
    if !s.hide_new_resources.is_zero() {
        let until = now + s.hide_new_resources;
        for id in &created {
            s.hidden.insert(id.clone(), until);
        }
    }
    if !s.hide_new_tags.is_zero() {
        let until = now + s.hide_new_tags;
        for id in &created {
            s.tag_lag.insert(id.clone(), until);
        }
        if op == "CreateTags" {
            for (k, v) in &call.form {
                if k.starts_with("ResourceId.") {
                    s.tag_lag.insert(v.clone(), until);
                }
            }
        }
    }
}

/// The answer AWS could give while `call` cannot yet see what was just created: an error
/// naming a hidden id the call names, or `None` to pass the call on (whose answer is then
/// filtered by [`filter_hidden`] through the caller).
fn hidden_by_consistency(state: &Mutex<State>, call: &Call) -> Option<Response<ProxyBody>> {
    let s = state.lock().unwrap_or_else(|p| p.into_inner());
    if s.hidden
        .values()
        .chain(s.tag_lag.values())
        .all(|until| Instant::now() >= *until)
    {
        return None;
    }
    let now = Instant::now();
    let op = call.operation.as_str();
    for (k, v) in &call.form {
        let names_id = k == "InstanceId"
            || k == "VolumeId"
            || k == "SnapshotId"
            || k == "SourceSnapshotId"
            || k.ends_with(".Ebs.SnapshotId")
            || k == "ImageId" && op != "RunInstances"
            || k.starts_with("InstanceId.")
            || k.starts_with("ImageId.")
            || k.starts_with("SnapshotId.")
            || k.starts_with("VolumeId.")
            || k.starts_with("ResourceId.");
        if names_id && s.hidden.get(v).is_some_and(|until| now < *until) {
            let code = match v.split('-').next().unwrap_or_default() {
                "i" => "InvalidInstanceID.NotFound",
                "ami" => "InvalidAMIID.NotFound",
                "snap" => "InvalidSnapshot.NotFound",
                _ => "InvalidVolume.NotFound",
            };
            let message = format!("The ID '{v}' does not exist");
            return Some(aws_error(Service::Ec2, 400, code, &message));
        }
    }
    None
}

/// Drops from a `Describe*` answer the items that name a resource still hidden (or, for a
/// `tag:` filtered call, one whose tags are still invisible).
fn filter_hidden(state: &Mutex<State>, call: &Call, body: Bytes) -> Bytes {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let tag_filtered = call
        .form
        .iter()
        .any(|(k, v)| k.starts_with("Filter.") && k.ends_with(".Name") && v.starts_with("tag:"));
    let text = String::from_utf8_lossy(&body).into_owned();
    let text = if call.operation == "DescribeSnapshots" && !s.linger_deleted.is_zero() {
        linger(&mut s, call, text)
    } else {
        text
    };
    let invisible = |id: &str| {
        s.hidden.get(id).is_some_and(|u| now < *u)
            || (tag_filtered && s.tag_lag.get(id).is_some_and(|u| now < *u))
    };
    let text = if s.snapshot_duration.is_zero() {
        text
    } else {
        pending_snapshots(&text, |id| {
            s.snapshots_created
                .get(id)
                .is_some_and(|at| now < *at + s.snapshot_duration)
        })
    };
    if !ids_in(&text).iter().any(|id| invisible(id)) {
        return Bytes::from(text);
    }
    let set = match call.operation.as_str() {
        "DescribeInstances" => "reservationSet",
        "DescribeImages" => "imagesSet",
        "DescribeSnapshots" => "snapshotSet",
        "DescribeVolumes" => "volumeSet",
        _ => return Bytes::from(text),
    };
    Bytes::from(drop_items(&text, set, |item| {
        ids_in(item).iter().any(|id| invisible(id))
    }))
}

/// Keeps in a `DescribeSnapshots` answer the snapshots deleted less than a window ago that
/// the same listing showed before, and remembers what this answer lists.
fn linger(s: &mut State, call: &Call, text: String) -> String {
    let listing = call.listing();
    let mut listed = std::collections::HashSet::new();
    for item in items(&text, "snapshotSet") {
        let id = item
            .split_once("<snapshotId>")
            .and_then(|(_, rest)| rest.split_once("</snapshotId>"))
            .map(|(id, _)| id.to_owned());
        if let Some(id) = id {
            let entry = s
                .listed_snapshots
                .entry(id.clone())
                .or_insert_with(|| (String::new(), Default::default()));
            entry.0 = item.to_owned();
            entry.1.insert(listing.clone());
            listed.insert(id);
        }
    }
    let now = Instant::now();
    let stale: String = s
        .deleted
        .iter()
        .filter(|(id, until)| now < **until && !listed.contains(*id))
        .filter_map(|(id, _)| s.listed_snapshots.get(id))
        .filter(|(_, listings)| listings.contains(&listing))
        .map(|(item, _)| item.as_str())
        .collect();
    if stale.is_empty() {
        return text;
    }
    if let Some(at) = text.rfind("</snapshotSet>") {
        format!("{}{stale}{}", &text[..at], &text[at..])
    } else {
        text.replacen(
            "<snapshotSet/>",
            &format!("<snapshotSet>{stale}</snapshotSet>"),
            1,
        )
    }
}

/// Where the top-level `<item>`s of `<set>` stand in `text`.
fn item_spans(text: &str, set: &str) -> Vec<std::ops::Range<usize>> {
    let open = format!("<{set}>");
    let close = format!("</{set}>");
    let (Some(start), Some(end)) = (text.find(&open), text.rfind(&close)) else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    let mut depth = 0usize;
    let mut item_start = 0;
    let mut i = start + open.len();
    while i < end {
        let rest = &text[i..end];
        if rest.starts_with("<item>") {
            if depth == 0 {
                item_start = i;
            }
            depth += 1;
            i += "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            i += "</item>".len();
            if depth == 0 {
                spans.push(item_start..i);
            }
        } else {
            i += rest.chars().next().map(char::len_utf8).unwrap_or(1);
        }
    }
    spans
}

fn items<'a>(text: &'a str, set: &str) -> Vec<&'a str> {
    item_spans(text, set)
        .into_iter()
        .map(|r| &text[r])
        .collect()
}

/// Shows as `pending` (with progress 50%) every snapshot for which `young` holds.
fn pending_snapshots(text: &str, young: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // In a CreateSnapshot answer the fields stand at the top; in DescribeSnapshots, in items.
    while let Some(at) = rest.find("<snapshotId>") {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let end = tail.find("</snapshotId>").unwrap_or(tail.len());
        let id = &tail["<snapshotId>".len()..end];
        let next = tail[1..]
            .find("<snapshotId>")
            .map(|i| i + 1)
            .unwrap_or(tail.len());
        let mut piece = tail[..next].to_owned();
        if young(id) {
            piece = piece
                .replace("<status>completed</status>", "<status>pending</status>")
                .replace("<progress>100%</progress>", "<progress>50%</progress>");
        }
        out.push_str(&piece);
        rest = &tail[next..];
    }
    out.push_str(rest);
    out
}

/// Removes the top-level `<item>`s of `<set>` for which `hide` holds.
fn drop_items(text: &str, set: &str, hide: impl Fn(&str) -> bool) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut last = 0;
    for span in item_spans(text, set) {
        if hide(&text[span.clone()]) {
            kept.push_str(&text[last..span.start]);
            last = span.end;
        }
    }
    kept.push_str(&text[last..]);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_items_removes_only_top_level_items_that_match() {
        let xml = "<r><reservationSet><item><id>a</id><instancesSet><item>i-00000001</item></instancesSet></item><item><id>b</id><instancesSet><item>i-00000002</item></instancesSet></item></reservationSet></r>";
        let out = drop_items(xml, "reservationSet", |item| item.contains("i-00000001"));
        assert_eq!(
            out,
            "<r><reservationSet><item><id>b</id><instancesSet><item>i-00000002</item></instancesSet></item></reservationSet></r>"
        );
    }

    #[test]
    fn ids_are_found_between_tags() {
        assert_eq!(
            ids_in("<instanceId>i-0123456789abcdef0</instanceId><x>i-zz</x><imageId>ami-12345678</imageId>"),
            vec!["i-0123456789abcdef0", "ami-12345678"]
        );
    }
}

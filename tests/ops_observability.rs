//! The dashboard and the alert rules in `deploy/observability/` name only metrics that exist.
//!
//! A real `mailroom` worker runs with its telemetry listener against rustack and a fresh
//! database, and gets a little traffic: stored batches, an undecodable message (a dead letter),
//! and a batch Postgres refuses until a trigger is dropped (a retry), so the counters,
//! histograms and depth gauges all have samples. Then /metrics is scraped and every
//! `mailroom_*` name referenced by `grafana-dashboard.json` and `alerts.yml` (histogram
//! `_bucket`/`_sum`/`_count` series by their family) must be in it. Counters that move only on
//! faults this test cannot cause (ack failures, SQS errors, Postgres errors) are accepted when
//! absent from the scrape if docs/operations.md documents them and the worker's source emits
//! them; the test prints which ones it checked that way.
//!
//! The router, too: `mailroom-router serve`'s app and its metrics listener run in this process
//! through the same library calls its `main` makes (`telemetry::install`,
//! `telemetry::serve_metrics`, `serve::serve`; the root crate's tests cannot run the router's
//! binary, `router/tests/metrics.rs` does), with the real AWS sink against rustack. It gets a
//! 2xx, an S3 offload, a 404, a 401 and a 503 (a queue that does not exist), its /metrics is
//! scraped, every `mailroom_router_*` name the dashboard and rules reference must be in it,
//! and the counts must be those requests. The Lambda's panels read CloudWatch, and the log
//! messages they count are checked against the router's source instead.
//!
//! Also: the dashboard parses, every panel has a datasource and targets, every datasource is a
//! declared input; every rule has `for:`, a severity and a runbook section that exists in
//! docs/operations.md, as does every CloudWatch alarm's.

mod ops_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailroom_router::{App, AwsSink, Config as RouterConfig};
use ops_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counters that are only incremented by faults outside this test's reach.
const FAULT_ONLY: [&str; 3] = [
    "mailroom_ack_failures_total",
    "mailroom_sqs_errors_total",
    "mailroom_postgres_errors_total",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metric names in a PromQL expression: identifiers starting with `mailroom_`, outside quoted
/// strings (label values such as `queue="mailroom-events"` are not names).
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut ident = String::new();
    let mut flush = |ident: &mut String| {
        if ident.starts_with("mailroom_") {
            names.insert(std::mem::take(ident));
        } else {
            ident.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut ident);
            while let Some(inner) = chars.next() {
                if inner == '\\' && c != '`' {
                    chars.next();
                } else if inner == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            if ident.is_empty() && c.is_ascii_digit() {
                continue;
            }
            ident.push(c);
        } else {
            flush(&mut ident);
        }
    }
    flush(&mut ident);
    names
}

/// One rule of alerts.yml, read line by line (the file's own layout: `- alert:`, `expr:` as a
/// one-liner or a `|` block, `for:`, `severity:`, `runbook:`). promtool validates the YAML
/// itself (scripts/observability-check.sh); this only needs the fields.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    for_: Option<String>,
    severity: Option<String>,
    runbook: Option<String>,
}

fn unquote(value: &str) -> String {
    value
        .trim()
        .trim_matches('"')
        .trim_matches('\'')
        .to_string()
}

fn parse_rules(text: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            rules.push(Rule {
                alert: unquote(name),
                ..Rule::default()
            });
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let mut block = Vec::new();
                while let Some(next) = lines.peek() {
                    let next_trimmed = next.trim_start();
                    if !next_trimmed.is_empty() && next.len() - next_trimmed.len() <= indent {
                        break;
                    }
                    block.push(next_trimmed.to_string());
                    lines.next();
                }
                rule.expr = block.join("\n").trim().to_string();
            } else {
                rule.expr = unquote(value);
            }
        } else if let Some(value) = trimmed.strip_prefix("for:") {
            rule.for_ = Some(unquote(value));
        } else if let Some(value) = trimmed.strip_prefix("severity:") {
            rule.severity = Some(unquote(value));
        } else if let Some(value) = trimmed.strip_prefix("runbook:") {
            rule.runbook = Some(unquote(value));
        }
    }
    rules
}

/// GitHub's anchors for the headings of a Markdown file.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Checks a `docs/operations.md#anchor` reference; returns a problem, if any.
fn runbook_problem(what: &str, runbook: &str, anchors: &BTreeSet<String>) -> Option<String> {
    match runbook.split_once('#') {
        Some(("docs/operations.md", anchor)) if anchors.contains(anchor) => None,
        Some(("docs/operations.md", anchor)) => Some(format!(
            "{what}: runbook anchor #{anchor} is not a heading of docs/operations.md"
        )),
        _ => Some(format!(
            "{what}: runbook {runbook:?} is not docs/operations.md#section"
        )),
    }
}

/// What the dashboard references, after checking its structure (every problem collected).
struct DashboardRefs {
    promql: Vec<(String, String)>,
    router_log_messages: BTreeSet<String>,
}

fn check_dashboard(json: &serde_json::Value, problems: &mut Vec<String>) -> DashboardRefs {
    let inputs: BTreeSet<String> = json["__inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["name"].as_str())
                .map(|n| format!("${{{n}}}"))
                .collect()
        })
        .unwrap_or_default();
    if inputs.is_empty() {
        problems.push("dashboard: no __inputs (datasources to choose on import)".into());
    }
    let mut refs = DashboardRefs {
        promql: Vec::new(),
        router_log_messages: BTreeSet::new(),
    };
    let check_ds = |what: &str, ds: &serde_json::Value, problems: &mut Vec<String>| {
        let uid = ds["uid"].as_str().unwrap_or("");
        if ds["type"].as_str().unwrap_or("").is_empty() || !inputs.contains(uid) {
            problems.push(format!(
                "{what}: datasource {ds} is not one of the declared inputs {inputs:?}"
            ));
        }
        ds["type"].as_str().unwrap_or("").to_string()
    };

    let mut panels: Vec<&serde_json::Value> = Vec::new();
    let mut stack: Vec<&serde_json::Value> = json["panels"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested.iter());
        }
        panels.push(p);
    }
    let mut real_panels = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        if panel["type"] == "row" {
            continue;
        }
        real_panels += 1;
        let panel_ds = check_ds(&format!("panel {title:?}"), &panel["datasource"], problems);
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no targets"));
        }
        for target in &targets {
            let what = format!(
                "panel {title:?} target {}",
                target["refId"].as_str().unwrap_or("?")
            );
            let ds = if target["datasource"].is_null() {
                panel_ds.clone()
            } else {
                check_ds(&what, &target["datasource"], problems)
            };
            match ds.as_str() {
                "prometheus" => match target["expr"].as_str() {
                    Some(expr) if !expr.trim().is_empty() => {
                        refs.promql.push((what, expr.to_string()))
                    }
                    _ => problems.push(format!("{what}: no expr")),
                },
                "cloudwatch" => {
                    let logs = target["queryMode"] == "Logs";
                    let expression = target["expression"].as_str().unwrap_or("");
                    if logs {
                        // Logs Insights over the router's JSON lines: `fields.message = "..."`.
                        for part in expression.split("fields.message = \"").skip(1) {
                            if let Some((message, _)) = part.split_once('"') {
                                refs.router_log_messages.insert(message.to_string());
                            }
                        }
                        if expression.trim().is_empty() {
                            problems.push(format!("{what}: empty Logs Insights query"));
                        }
                    } else if target["namespace"].as_str().unwrap_or("").is_empty()
                        || target["metricName"].as_str().unwrap_or("").is_empty()
                    {
                        problems.push(format!("{what}: CloudWatch target without metric"));
                    }
                }
                other => problems.push(format!("{what}: unexpected datasource type {other:?}")),
            }
        }
    }
    if real_panels == 0 {
        problems.push("dashboard: no panels".into());
    }
    for var in json["templating"]["list"].as_array().into_iter().flatten() {
        if var["datasource"]["type"] == "prometheus" {
            let name = var["name"].as_str().unwrap_or("?");
            let query = var["query"]["query"]
                .as_str()
                .or(var["query"].as_str())
                .unwrap_or("");
            check_ds(&format!("variable {name}"), &var["datasource"], problems);
            refs.promql
                .push((format!("variable {name}"), query.to_string()));
        }
    }
    refs
}

/// Metric families in a Prometheus text exposition, with their `# TYPE` (or `untyped`).
fn scraped_families(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            families.entry(name).or_insert_with(|| "untyped".into());
        }
    }
    families
}

/// The family a referenced series belongs to: `x_bucket`, `x_sum` and `x_count` of a histogram
/// (or summary) `x` are `x`.
fn family_of(name: &str, families: &BTreeMap<String, String>, documented: &[String]) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            let scraped = families.get(base).map(String::as_str);
            if matches!(scraped, Some("histogram" | "summary"))
                || (scraped.is_none() && documented.iter().any(|d| d == base))
            {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Metric names of the table in docs/operations.md's "Metrics" section.
fn documented_metrics(operations: &str) -> Vec<String> {
    operations
        .lines()
        .filter_map(|l| l.strip_prefix("| `mailroom_"))
        .filter_map(|l| l.split_once('`'))
        .map(|(rest, _)| format!("mailroom_{rest}"))
        .collect()
}

/// Does any file under `dir` (Rust sources) contain `needle`?
fn source_contains(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            source_contains(&path, needle)
        } else {
            path.extension().is_some_and(|x| x == "rs")
                && std::fs::read_to_string(&path).is_ok_and(|t| t.contains(needle))
        }
    })
}

/// The value of the sample `name{labels}` (labels in any order) in a Prometheus text scrape,
/// parsed as the status page parses it.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    mailroom::telemetry::parse_samples(text)
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<BTreeMap<_, _>>()
                    == want
        })
        .map(|s| s.value)
}

/// One HTTP/1.1 request (`Connection: close`) to `addr`; the status. Bounded by 30 s.
async fn http_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> u16 {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
             content-length: {}\r\n{headers}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(body).await.expect("write body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response).into_owned();
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text}"))
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 30 s"))
}

/// `mailroom-router serve` in this process, as its `main` assembles it with
/// `MAILROOM_ROUTER_METRICS_LISTEN`: the recorder, the metrics listener, the app with the real
/// AWS sink on rustack. Sends one request per outcome and returns the /metrics text, after
/// checking the counts.
async fn router_traffic_and_scrape(sqs: &aws_sdk_sqs::Client) -> String {
    let queue = create_queue(sqs, &unique("observability-router"), 30, None).await;
    let bucket = unique_dashed("observability-router").to_lowercase();
    let aws = sdk_config(&endpoint()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let missing_queue = format!("{}/000000000000/{}", endpoint(), unique("no-such-queue"));
    let vars: HashMap<String, String> = [
        ("MAILROOM_EVENTS_QUEUE_URL", queue.as_str()),
        ("MAILROOM_INBOUND_QUEUE_URL", missing_queue.as_str()),
        ("MAILROOM_INBOUND_BASIC_AUTH", "user:secret"),
        ("MAILROOM_LARGE_BODY_BUCKET", bucket.as_str()),
        ("MAILROOM_MAX_MESSAGE_BYTES", "8192"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // What main.rs does for `serve` with MAILROOM_ROUTER_METRICS_LISTEN.
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_port = metrics_listener.local_addr().expect("addr").port();
    let router_config = RouterConfig::from_vars(vars).expect("router config");
    let handle = mailroom_router::telemetry::install(&router_config).expect("router recorder");
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::spawn(mailroom_router::telemetry::serve_metrics(
        handle,
        metrics_listener,
        async {
            let _ = metrics_stopped.await;
        },
    ));
    let app = Arc::new(App::new(router_config, AwsSink::from_sdk_config(&aws)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tokio::spawn(mailroom_router::serve::serve(app, listener, async {
        let _ = router_stopped.await;
    }));

    let json = "content-type: application/json\r\n";
    let small = events_body(&[unique("router-small")]);
    let ids: Vec<String> = (0..100).map(|i| format!("router-large-{i}")).collect();
    let large = events_body(&ids);
    assert!(large.len() > 8192, "the large batch must be offloaded");
    assert_eq!(
        http_status(addr, "POST", "/sendgrid/events", json, &small).await,
        200
    );
    assert_eq!(
        http_status(addr, "POST", "/sendgrid/events", json, &large).await,
        200
    );
    assert_eq!(
        http_status(addr, "GET", "/metrics", "", b"").await,
        404,
        "not on the callback port"
    );
    let text_plain = "content-type: text/plain\r\n";
    assert_eq!(
        http_status(addr, "POST", "/sendgrid/inbound", text_plain, b"hi").await,
        401
    );
    // user:secret
    let authorized = "content-type: text/plain\r\nauthorization: Basic dXNlcjpzZWNyZXQ=\r\n";
    assert_eq!(
        http_status(addr, "POST", "/sendgrid/inbound", authorized, b"hi").await,
        503
    );

    let (status, text) = http_get(metrics_port, "/metrics")
        .await
        .expect("router /metrics");
    assert_eq!(status, 200);
    let requests = |kind, status| {
        sample(
            &text,
            "mailroom_router_requests_total",
            &[("kind", kind), ("status", status)],
        )
    };
    let by_kind = |name, kind| sample(&text, name, &[("kind", kind)]);
    let expected = [
        (requests("events", "200"), 2.0, "events 200"),
        (requests("other", "404"), 1.0, "other 404"),
        (requests("inbound", "401"), 1.0, "inbound 401"),
        (requests("inbound", "503"), 1.0, "inbound 503"),
        (
            requests("events", "503"),
            0.0,
            "events 503, registered at 0",
        ),
        (
            requests("inbound", "500"),
            0.0,
            "inbound 500, registered at 0",
        ),
        (
            by_kind("mailroom_router_s3_offloads_total", "events"),
            1.0,
            "events offloaded",
        ),
        (
            by_kind("mailroom_router_s3_offload_failures_total", "events"),
            0.0,
            "offload failures",
        ),
        (
            by_kind("mailroom_router_sqs_send_failures_total", "inbound"),
            1.0,
            "inbound send failure",
        ),
        (
            by_kind("mailroom_router_sqs_send_failures_total", "events"),
            0.0,
            "events send failures",
        ),
        (
            by_kind("mailroom_router_request_duration_seconds_count", "events"),
            2.0,
            "events timed",
        ),
        (
            by_kind("mailroom_router_request_bytes_count", "inbound"),
            2.0,
            "inbound sized",
        ),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(got, want, _)| *got != Some(*want))
        .map(|(got, want, what)| format!("{what}: {got:?}, want {want}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "router counts:\n{}\n\nscrape:\n{text}",
        wrong.join("\n")
    );

    let _ = stop_router.send(());
    router.await.expect("router task").expect("router serve");
    let _ = stop_metrics.send(());
    metrics
        .await
        .expect("metrics task")
        .expect("metrics listener");
    let _ = sqs.delete_queue().queue_url(&queue).send().await;
    if let Ok(listed) = s3.list_objects_v2().bucket(&bucket).send().await {
        for object in listed.contents() {
            if let Some(key) = object.key() {
                let _ = s3.delete_object().bucket(&bucket).key(key).send().await;
            }
        }
    }
    let _ = s3.delete_bucket().bucket(&bucket).send().await;
    text
}

#[test]
fn promql_names_skip_label_values_and_functions() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, queue) (rate(mailroom_handler_duration_seconds_bucket{queue=~"mailroom_x|$queue"}[5m])))
           / on (queue) mailroom_in_flight unless absent(up{job="mailroom"} == 1)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "mailroom_handler_duration_seconds_bucket",
            "mailroom_in_flight"
        ]
    );
}

#[test]
fn rules_parse_with_block_and_inline_expressions() {
    let rules = parse_rules(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          x > 0\n          and y\n        for: 5m\n        labels:\n          severity: page\n        annotations:\n          runbook: \"docs/operations.md#a\"\n      - alert: B\n        expr: up == 0\n",
    );
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].expr, "x > 0\nand y");
    assert_eq!(rules[0].for_.as_deref(), Some("5m"));
    assert_eq!(rules[0].severity.as_deref(), Some("page"));
    assert_eq!(rules[0].runbook.as_deref(), Some("docs/operations.md#a"));
    assert_eq!(rules[1].expr, "up == 0");
    assert_eq!(rules[1].for_, None);
}

/// The files' own structure, without a worker: dashboard panels, rule fields, runbook anchors.
#[test]
fn dashboard_and_rules_are_well_formed() {
    let dir = root().join("deploy/observability");
    let operations = read(&root().join("docs/operations.md"));
    let anchors = heading_anchors(&operations);
    let mut problems = Vec::new();

    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&dir.join("grafana-dashboard.json")))
            .expect("grafana-dashboard.json parses");
    let refs = check_dashboard(&dashboard, &mut problems);
    assert!(!refs.promql.is_empty(), "the dashboard has PromQL targets");

    let rules = parse_rules(&read(&dir.join("alerts.yml")));
    assert!(rules.len() >= 7, "alerts.yml has its rules: {rules:?}");
    for rule in &rules {
        let what = format!("alert {}", rule.alert);
        if rule.expr.is_empty() {
            problems.push(format!("{what}: no expr"));
        }
        if rule.for_.is_none() {
            problems.push(format!("{what}: no for:"));
        }
        match rule.severity.as_deref() {
            Some("page" | "warning") => {}
            other => problems.push(format!("{what}: severity {other:?}, want page or warning")),
        }
        match &rule.runbook {
            Some(runbook) => problems.extend(runbook_problem(&what, runbook, &anchors)),
            None => problems.push(format!("{what}: no runbook annotation")),
        }
    }

    // The CloudWatch alarms (router 5xx, oldest message age) name their runbook sections in
    // their descriptions.
    let alarms = read(&dir.join("cloudwatch-alarms.yaml"));
    let mut alarm_count = 0;
    for part in alarms.split("AWS::CloudWatch::Alarm").skip(1) {
        alarm_count += 1;
        let runbook = part
            .split_whitespace()
            .find(|w| w.starts_with("docs/operations.md#"))
            .unwrap_or("(none)");
        problems.extend(runbook_problem("CloudWatch alarm", runbook, &anchors));
    }
    assert!(alarm_count >= 2, "cloudwatch-alarms.yaml has its alarms");

    // The router's Logs Insights panels count log lines by message: the router must log them.
    let router_src = root().join("router/src");
    for message in &refs.router_log_messages {
        if !source_contains(&router_src, &format!("\"{message}\"")) {
            problems.push(format!(
                "dashboard counts router log lines {message:?}, which router/src never logs"
            ));
        }
    }
    assert!(
        !refs.router_log_messages.is_empty(),
        "the dashboard's S3 offload panel reads the router's log lines"
    );

    // Every documented metric has a place on the dashboard.
    let on_dashboard: BTreeSet<String> = refs
        .promql
        .iter()
        .flat_map(|(_, e)| promql_metric_names(e))
        .collect();
    for metric in documented_metrics(&operations) {
        if !on_dashboard.iter().any(|n| n.starts_with(&metric)) {
            problems.push(format!(
                "documented metric {metric} is on no dashboard panel"
            ));
        }
    }
    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
}

/// Every name the dashboard and the rules reference is exported by a real worker.
#[tokio::test]
async fn every_referenced_metric_is_exported() {
    let dir = root().join("deploy/observability");
    let operations = read(&root().join("docs/operations.md"));
    let documented = documented_metrics(&operations);
    assert!(
        documented.len() >= 10,
        "docs/operations.md lists the metrics"
    );
    let mut problems = Vec::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&dir.join("grafana-dashboard.json"))).expect("dashboard");
    let mut referenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (what, expr) in check_dashboard(&dashboard, &mut problems).promql {
        for name in promql_metric_names(&expr) {
            referenced.entry(name).or_default().insert(what.clone());
        }
    }
    for rule in parse_rules(&read(&dir.join("alerts.yml"))) {
        for name in promql_metric_names(&rule.expr) {
            referenced
                .entry(name)
                .or_default()
                .insert(format!("alert {}", rule.alert));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(referenced.len() >= 10, "names found: {referenced:?}");

    // A worker on a queue with a DLQ, with its telemetry listener.
    let sqs = sqs().await;
    let name = unique("observability");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    let db = TestDb::create().await;
    let tmp = temp_dir("ops-observability");
    let port = free_port();
    let config = write_config(
        &tmp,
        &db.url,
        &[(&name, &url)],
        // A forwarder too, so its series are exported (its application is not there: it
        // retries, which is all this test needs).
        &format!(
            "[telemetry]\nlisten = \"127.0.0.1:{port}\"\n\n[[forward]]\nname = \"app\"\n\
             url = \"http://127.0.0.1:{}/\"\nrate_per_second = 1\nsigning_secrets = [\"k\"]\n",
            free_port()
        ),
    );
    migrate(&config);
    let mut worker = Worker::start(&config, tmp.join("worker.log"), &[]);
    worker.wait_log("\"receiving\"", 30).await;

    // Traffic: three stored batches.
    for m in 0..3 {
        let ids: Vec<String> = (0..2).map(|e| format!("{name}-{m}-{e}")).collect();
        send(&sqs, &url, &[events_message(&ids)]).await;
    }
    eventually_async(30, "6 events stored", || async {
        count(&db, "select count(*) from mailroom_events").await == 6
    })
    .await;

    // A dead letter: a body that is no envelope at all.
    send(&sqs, &url, &["this is not an envelope".to_string()]).await;
    eventually_async(30, "the undecodable message dead-lettered", || async {
        count(&db, "select count(*) from mailroom_dead_letters").await == 1
    })
    .await;

    // A retry: Postgres refuses the batch (a trigger raises; P0001 is neither transient nor the
    // data's fault, so the handler answers retry) until the trigger is dropped.
    {
        let mut conn = db.connect().await;
        for sql in [
            "create function obs_refuse() returns trigger language plpgsql as \
             $$ begin raise exception 'ops_observability: refused on purpose'; end $$",
            "create trigger obs_refuse before insert on mailroom_events \
             for each row execute function obs_refuse()",
        ] {
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
    }
    let ids = vec![format!("{name}-retry")];
    send(&sqs, &url, &[events_message(&ids)]).await;
    let retried = format!("mailroom_messages_retried_total{{queue=\"{name}\"");
    eventually_async(30, "a retry counted", || async {
        let Some((200, text)) = http_get(port, "/metrics").await else {
            return false;
        };
        text.lines()
            .filter(|l| l.starts_with(&retried))
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0))
    })
    .await;
    {
        let mut conn = db.connect().await;
        sqlx::query("drop trigger obs_refuse on mailroom_events")
            .execute(&mut conn)
            .await
            .expect("drop trigger");
    }
    // Stored on its next attempt, or dead-lettered if the retries ran out before the drop.
    eventually_async(30, "the refused batch settled", || async {
        count(&db, "select count(*) from mailroom_events").await == 7
            || count(&db, "select count(*) from mailroom_dead_letters").await == 2
    })
    .await;

    // The router: its own traffic and scrape (in this process; the worker is a child).
    let router_text = router_traffic_and_scrape(&sqs).await;
    let router_families = scraped_families(&router_text);

    // Everything the traffic produces, scraped once it is all there.
    let needed = [
        "mailroom_handler_duration_seconds_bucket",
        "mailroom_ack_batch_size_bucket",
        "mailroom_queue_messages{",
        "mailroom_dlq_messages{",
        "mailroom_messages_dead_lettered_total{",
        "mailroom_messages_retried_total{",
    ];
    eventually_async(
        45,
        "histograms, depth gauges and counters scraped",
        || async {
            matches!(http_get(port, "/metrics").await,
            Some((200, body)) if needed.iter().all(|n| body.contains(n)))
        },
    )
    .await;
    // Series never disappear once there, so this scrape has them all.
    let (_, text) = http_get(port, "/metrics").await.expect("/metrics");
    let families = scraped_families(&text);
    let worker_src = root().join("src");

    let mut checked_by_docs = Vec::new();
    let mut router_names = 0;
    for (name, users) in &referenced {
        if name.starts_with("mailroom_router_") {
            router_names += 1;
            let family = family_of(name, &router_families, &documented);
            if !router_families.contains_key(&family) {
                problems.push(format!(
                    "{name} (used by {users:?}) is not exported by mailroom-router serve"
                ));
            }
            continue;
        }
        let family = family_of(name, &families, &documented);
        if families.contains_key(&family) {
            continue;
        }
        let fault_only = FAULT_ONLY.contains(&family.as_str());
        if fault_only
            && documented.contains(&family)
            && source_contains(&worker_src, &format!("\"{family}\""))
        {
            checked_by_docs.push(family);
            continue;
        }
        problems.push(format!(
            "{name} (used by {users:?}) is not exported{}",
            if fault_only {
                " and not both documented in docs/operations.md and emitted in src/"
            } else {
                ""
            }
        ));
    }
    let tail = worker.log_tail();
    let status = worker.stop(30).await;
    let _ = std::fs::remove_dir_all(&tmp);
    db.drop_db().await;

    println!(
        "{} metric names referenced by the dashboard and alerts.yml; in a scrape (worker or \
         router): {}",
        referenced.len(),
        referenced
            .keys()
            .filter(|n| {
                families.contains_key(&family_of(n, &families, &documented))
                    || router_families.contains_key(&family_of(n, &router_families, &documented))
            })
            .count()
    );
    if checked_by_docs.is_empty() {
        println!("every referenced metric was in the scrape (fault-only counters included)");
    } else {
        println!(
            "not in the scrape, accepted as documented in docs/operations.md and emitted in src/: {}",
            checked_by_docs.join(", ")
        );
    }
    println!(
        "router: {router_names} mailroom_router_* names referenced, all checked against \
         mailroom-router serve's scrape; the Lambda's panels read CloudWatch"
    );
    assert!(
        router_names >= 5,
        "the dashboard and rules use the router's metrics: {referenced:?}"
    );
    assert!(
        problems.is_empty(),
        "problems:\n{}\n\nworker scrape:\n{text}\n\nrouter scrape:\n{router_text}",
        problems.join("\n")
    );
    assert_eq!(status.code(), Some(0), "worker exit; log tail:\n{tail}");
}

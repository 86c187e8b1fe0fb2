//! moto in server mode, reached through the normal AWS SDK. Uses `AWS_ENDPOINT_URL` when it is
//! set (CI starts one moto for the run); otherwise starts one per test process on a free
//! 127.0.0.1 port, watched by a tiny shell loop that stops it by PID when the tests exit.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use shared::config::QueueSettings;
use shared::queue::SqsQueue;
use shared::store::DynamoStore;
use tokio::sync::OnceCell;

static ENDPOINT: OnceCell<String> = OnceCell::const_new();

pub async fn endpoint() -> &'static str {
    ENDPOINT
        .get_or_init(|| async {
            match std::env::var("AWS_ENDPOINT_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => start_moto().await,
            }
        })
        .await
}

async fn start_moto() -> String {
    let found = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(found, Ok(true)),
        "moto is not installed: run `python3 -m pip install -r tests/requirements.txt` (or set AWS_ENDPOINT_URL)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let log = std::env::temp_dir().join(format!("moto-{port}.log"));
    let script = format!(
        "python3 -m moto.server -H 127.0.0.1 -p {port} >{log} 2>&1 & moto=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $moto 2>/dev/null; do sleep 1; done; kill $moto 2>/dev/null",
        log = log.display(),
        parent = std::process::id(),
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto server");
    // Reaps the watchdog if moto dies early; otherwise it outlives the tests on purpose.
    std::thread::spawn(move || watchdog.wait());
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{url}/moto-api/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto server did not start on {url}; see {}", log.display());
}

/// SDK configuration for moto: fixed region and static credentials, so nothing probes
/// instance metadata or the developer's own AWS profile.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint().await)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

pub async fn fresh_store() -> DynamoStore {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = crate::unique("billing-");
    DynamoStore::create_table(&client, &table)
        .await
        .expect("create table on moto");
    DynamoStore::new(client, table)
}

/// Two fresh FIFO queues with content-based deduplication off, as the SAM template makes them.
pub async fn fresh_queues() -> (aws_sdk_sqs::Client, QueueSettings, SqsQueue) {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let suffix = crate::unique("");
    let mut urls = Vec::new();
    for name in ["events", "payment-failed"] {
        let output = client
            .create_queue()
            .queue_name(format!("{name}-{suffix}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .send()
            .await
            .expect("create queue on moto");
        urls.push(output.queue_url.expect("queue url"));
    }
    let settings = QueueSettings {
        events_url: urls[0].clone(),
        payment_failed_url: urls[1].clone(),
    };
    (client.clone(), settings.clone(), SqsQueue::new(client, settings))
}

/// An SNS topic with a fresh SQS queue subscribed to it (raw delivery), as an app subscribes
/// to the app-events topic: (SNS client, topic ARN, SQS client, queue URL).
pub async fn subscribed_topic() -> (aws_sdk_sns::Client, String, aws_sdk_sqs::Client, String) {
    let sdk = sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic = sns
        .create_topic()
        .name(crate::unique("app-events-"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name(crate::unique("app-subscriber-"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = format!(
        "arn:aws:sqs:us-east-1:123456789012:{}",
        queue.rsplit('/').next().unwrap()
    );
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    (sns, topic, sqs, queue)
}

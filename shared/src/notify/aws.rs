use aws_sdk_sesv2::error::ProvideErrorMetadata;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use aws_sdk_sns::types::MessageAttributeValue;

use super::{AppEvent, DunningEmail, Notifier, NotifyError, Publisher};

/// App events on one SNS topic, the `type` as a message attribute to filter on.
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsPublisher {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Self { sns, topic_arn }
    }
}

/// SES v2 for email, SNS for app events; clients built once at start.
#[derive(Debug, Clone)]
pub struct AwsNotifier {
    ses: aws_sdk_sesv2::Client,
    from: String,
    publisher: SnsPublisher,
}

impl AwsNotifier {
    pub fn new(ses: aws_sdk_sesv2::Client, sns: aws_sdk_sns::Client, from: String, topic_arn: String) -> Self {
        Self {
            ses,
            from,
            publisher: SnsPublisher::new(sns, topic_arn),
        }
    }
}

/// Only the error's code: SES messages can name the recipient's address, which must never
/// reach the logs.
fn error_code<E: ProvideErrorMetadata, R>(error: &aws_sdk_sesv2::error::SdkError<E, R>) -> String {
    match error.as_service_error().and_then(ProvideErrorMetadata::code) {
        Some(code) => code.to_owned(),
        None => "the request did not reach the service".to_owned(),
    }
}

fn content(text: &str) -> Result<Content, NotifyError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|error| NotifyError::Email(error.to_string()))
}

impl Notifier for AwsNotifier {
    async fn send_email(&self, email: &DunningEmail) -> Result<(), NotifyError> {
        let message = Message::builder()
            .subject(content(&email.subject)?)
            .body(Body::builder().text(content(&email.body)?).build())
            .build();
        self.ses
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|error| NotifyError::Email(error_code(&error)))?;
        Ok(())
    }
}

impl Publisher for SnsPublisher {
    async fn publish<E: AppEvent>(&self, event: &E) -> Result<(), NotifyError> {
        let body = serde_json::to_string(event).map_err(|error| NotifyError::Publish(error.to_string()))?;
        let kind = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(E::TYPE)
            .build()
            .map_err(|error| NotifyError::Publish(error.to_string()))?;
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body)
            .message_attributes("type", kind)
            .send()
            .await
            .map_err(|error| NotifyError::Publish(error_code(&error)))?;
        Ok(())
    }
}

impl Publisher for AwsNotifier {
    async fn publish<E: AppEvent>(&self, event: &E) -> Result<(), NotifyError> {
        self.publisher.publish(event).await
    }
}

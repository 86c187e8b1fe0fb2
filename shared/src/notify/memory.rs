use std::any::Any;
use std::sync::Mutex;

use super::{AppEvent, DunningEmail, Notifier, NotifyError, PaymentFailedEvent, Publisher};

/// Records what would have been sent: for `billing dev`, the demo and tests.
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    emails: Mutex<Vec<DunningEmail>>,
    events: Mutex<Vec<PaymentFailedEvent>>,
    published: Mutex<Vec<serde_json::Value>>,
}

fn read<T: Clone>(items: &Mutex<Vec<T>>) -> Vec<T> {
    items.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn push<T>(items: &Mutex<Vec<T>>, item: T) {
    items
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(item);
}

impl MemoryNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn emails(&self) -> Vec<DunningEmail> {
        read(&self.emails)
    }

    /// The `billing.payment_failed` events, typed.
    pub fn events(&self) -> Vec<PaymentFailedEvent> {
        read(&self.events)
    }

    /// Every app event, as the JSON the topic would carry.
    pub fn published(&self) -> Vec<serde_json::Value> {
        read(&self.published)
    }
}

impl Publisher for MemoryNotifier {
    async fn publish<E: AppEvent>(&self, event: &E) -> Result<(), NotifyError> {
        let json = serde_json::to_value(event).map_err(|error| NotifyError::Publish(error.to_string()))?;
        push(&self.published, json);
        if let Some(failed) = (event as &dyn Any).downcast_ref::<PaymentFailedEvent>() {
            push(&self.events, failed.clone());
        }
        Ok(())
    }
}

impl Notifier for MemoryNotifier {
    async fn send_email(&self, email: &DunningEmail) -> Result<(), NotifyError> {
        push(&self.emails, email.clone());
        Ok(())
    }
}

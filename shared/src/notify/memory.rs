use std::sync::Mutex;

use super::{DunningEmail, Notifier, NotifyError, PaymentFailedEvent};

/// Records what would have been sent: for `billing dev`, the demo and tests.
#[derive(Debug, Default)]
pub struct MemoryNotifier {
    emails: Mutex<Vec<DunningEmail>>,
    events: Mutex<Vec<PaymentFailedEvent>>,
}

impl MemoryNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn emails(&self) -> Vec<DunningEmail> {
        self.emails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn events(&self) -> Vec<PaymentFailedEvent> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Notifier for MemoryNotifier {
    async fn send_email(&self, email: &DunningEmail) -> Result<(), NotifyError> {
        self.emails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(email.clone());
        Ok(())
    }

    async fn publish(&self, event: &PaymentFailedEvent) -> Result<(), NotifyError> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}

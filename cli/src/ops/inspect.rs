//! `billing inspect user <id> | customer <cus_>`: what the store holds for one customer, and
//! the access the app would grant right now.

use serde::Serialize;
use shared::entitlement::EntitlementView;
use shared::store::{BillingStore, DunningRecord, Entitlement, SubscriptionRecord, UserId};

use super::{Deployment, OpsError, Output};

#[derive(Debug, Clone)]
pub enum Subject {
    User(String),
    Customer(String),
}

#[derive(Debug, Serialize)]
struct Inspection {
    user: Option<UserId>,
    customer: Option<String>,
    /// What `GET /billing/me` answers now (grace deadlines applied at this instant).
    access_now: Option<EntitlementView>,
    entitlement: Option<Entitlement>,
    subscriptions: Vec<SubscriptionRecord>,
    dunning: Vec<DunningRecord>,
}

pub async fn inspect(deployment: &Deployment, subject: Subject, output: Output) -> Result<(), OpsError> {
    let store = deployment.store()?;
    let (user, customer) = match subject {
        Subject::User(raw) => {
            let user = UserId::parse(&raw).map_err(|error| OpsError::Usage(error.to_string()))?;
            let customer = store.customer_of_user(&user).await?;
            (Some(user), customer)
        }
        Subject::Customer(customer) => (store.user_of_customer(&customer).await?, Some(customer)),
    };
    let (subscriptions, dunning) = match &customer {
        Some(customer) => (
            store.subscriptions_of_customer(customer).await?,
            store.dunning_of_customer(customer).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let entitlement = match &user {
        Some(user) => store.get_entitlement(user).await?,
        None => None,
    };
    let nothing = user.is_none() || customer.is_none();
    if nothing && entitlement.is_none() && subscriptions.is_empty() && dunning.is_empty() {
        return Err(OpsError::NotFound(
            "nothing stored for it: no customer link, subscription, dunning record or entitlement".into(),
        ));
    }
    let inspection = Inspection {
        access_now: entitlement
            .as_ref()
            .map(|entitlement| EntitlementView::at(entitlement, shared::unix_now())),
        user,
        customer,
        entitlement,
        subscriptions,
        dunning,
    };
    // Structured either way: the human form is the same document, indented.
    let human = serde_json::to_string_pretty(&inspection).map_err(|error| OpsError::Usage(error.to_string()))?;
    output.emit(&human, &inspection)
}

//! `billing inspect account <id> | customer <cus_>`: what the store holds for one customer, and
//! the access the app would grant right now.

use serde::Serialize;
use shared::entitlement::EntitlementView;
use shared::store::{AccountId, BillingStore, DunningRecord, Entitlement, SubscriptionRecord};

use super::{Deployment, OpsError, Output};

#[derive(Debug, Clone)]
pub enum Subject {
    Account(String),
    Customer(String),
}

#[derive(Debug, Serialize)]
struct Inspection {
    account: Option<AccountId>,
    customer: Option<String>,
    /// What `GET /billing/me` answers now (grace deadlines applied at this instant).
    access_now: Option<EntitlementView>,
    entitlement: Option<Entitlement>,
    subscriptions: Vec<SubscriptionRecord>,
    dunning: Vec<DunningRecord>,
}

pub async fn inspect(deployment: &Deployment, subject: Subject, output: Output) -> Result<(), OpsError> {
    let store = deployment.store()?;
    let (account, customer) = match subject {
        Subject::Account(raw) => {
            let account = AccountId::parse(&raw).map_err(|error| OpsError::Usage(error.to_string()))?;
            let customer = store.customer_of_account(&account).await?;
            (Some(account), customer)
        }
        Subject::Customer(customer) => (store.account_of_customer(&customer).await?, Some(customer)),
    };
    let (subscriptions, dunning) = match &customer {
        Some(customer) => (
            store.subscriptions_of_customer(customer).await?,
            store.dunning_of_customer(customer).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let entitlement = match &account {
        Some(account) => store.get_entitlement(account).await?,
        None => None,
    };
    let nothing = account.is_none() || customer.is_none();
    if nothing && entitlement.is_none() && subscriptions.is_empty() && dunning.is_empty() {
        return Err(OpsError::NotFound(
            "nothing stored for it: no customer link, subscription, dunning record or entitlement".into(),
        ));
    }
    let inspection = Inspection {
        access_now: entitlement
            .as_ref()
            .map(|entitlement| EntitlementView::at(entitlement, shared::unix_now())),
        account,
        customer,
        entitlement,
        subscriptions,
        dunning,
    };
    // Structured either way: the human form is the same document, indented.
    let human = serde_json::to_string_pretty(&inspection).map_err(|error| OpsError::Usage(error.to_string()))?;
    output.emit(&human, &inspection)
}

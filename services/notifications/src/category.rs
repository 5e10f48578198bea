//! Categories of messages and the rule that decides whether one is sent: people may opt out
//! of a category, except the critical ones (security, and the state of their orders and
//! payments), which always go.

use serde::{Deserialize, Serialize};

/// What a message is about; preferences and unsubscribe links work per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Password resets and other account security notices. Critical.
    Security,
    /// An order's state and its payment: placed, confirmed, cancelled, refunded, a declined
    /// payment, a payment waiting for the customer. Critical.
    Orders,
    /// Where a parcel is: shipped, delivered.
    Shipping,
    /// About the account itself: the welcome message.
    Account,
    /// Offers and news.
    Marketing,
}

impl Category {
    /// Every category, in the order preferences list them.
    pub const ALL: [Category; 5] = [
        Category::Security,
        Category::Orders,
        Category::Shipping,
        Category::Account,
        Category::Marketing,
    ];

    /// Critical messages cannot be opted out of and carry no unsubscribe link.
    pub fn critical(self) -> bool {
        matches!(self, Category::Security | Category::Orders)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Security => "security",
            Category::Orders => "orders",
            Category::Shipping => "shipping",
            Category::Account => "account",
            Category::Marketing => "marketing",
        }
    }

    /// The category a stored name stands for.
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether a message of this category goes to someone who opted out of `opted_out`.
    pub fn is_sent_despite(self, opted_out: &[Category]) -> bool {
        self.critical() || !opted_out.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opted_out_category_is_not_sent_and_the_others_are() {
        let opted_out = [Category::Shipping];
        assert!(!Category::Shipping.is_sent_despite(&opted_out));
        assert!(Category::Account.is_sent_despite(&opted_out));
    }

    #[test]
    fn critical_categories_are_sent_even_when_opted_out() {
        let opted_out = Category::ALL;
        assert!(Category::Security.is_sent_despite(&opted_out));
        assert!(Category::Orders.is_sent_despite(&opted_out));
        assert!(!Category::Marketing.is_sent_despite(&opted_out));
    }

    #[test]
    fn every_category_round_trips_through_its_stored_name() {
        for category in Category::ALL {
            assert_eq!(Category::parse(category.as_str()), Some(category));
        }
        assert_eq!(Category::parse("spam"), None);
    }
}

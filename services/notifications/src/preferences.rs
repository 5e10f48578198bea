//! People's preferences: a locale, a time zone and quiet hours, and the categories they opted
//! out of (by their settings or by an unsubscribe link). Critical categories are never stored
//! as opted out, and never wait for quiet hours to end.

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::{category::Category, channel::Channel, locale::Locale, quiet::QuietHours};

/// A signed-in user's preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Preferences {
    /// The language of their messages; null: the shop's default.
    pub locale: Option<Locale>,
    /// Their IANA time zone (`Europe/Madrid`); null: the shop's default.
    pub timezone: Option<String>,
    /// When non-critical messages wait, in their time zone; null: never.
    pub quiet_hours: Option<QuietHours>,
    /// Where their text messages go (E.164, `+34600111222`), verified; null: no SMS.
    pub phone: Option<String>,
    /// A number set but not verified yet: a code was texted to it, to send back to `POST
    /// /v1/notifications/phone/verify`.
    pub phone_pending: Option<String>,
    /// Every category, whether they get it, and on which channels.
    pub categories: Vec<CategoryPreference>,
}

/// Whether someone gets one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPreference {
    /// The category.
    pub category: Category,
    /// Critical categories cannot be unsubscribed from (read-only; ignored on PUT).
    #[serde(default)]
    pub critical: bool,
    /// Whether they get it.
    pub subscribed: bool,
    /// Per channel (`email`, `sms`, `push`), whether they get it there. Left out on PUT: the
    /// channel's default (on, except marketing by SMS or push). Email of a critical category
    /// is always on. SMS needs a phone number and push a registered device.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, bool>)]
    pub channels: BTreeMap<Channel, bool>,
    /// Its email as one message per window (`hourly`, or `daily` in their time zone) listing
    /// what happened; null: one message per event. Not for critical categories.
    #[serde(default)]
    pub digest: Option<crate::digests::Window>,
}

/// `PUT /v1/notifications/preferences`: the whole set (categories left out are subscribed).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    /// The language of their messages; null: the shop's default.
    #[serde(default)]
    pub locale: Option<Locale>,
    /// Their IANA time zone (`Europe/Madrid`); null: the shop's default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When non-critical messages wait (`{"start": "22:00", "end": "08:00"}`); null: never.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// Where text messages go (E.164, `+34600111222`); null: no SMS. A number other than
    /// the verified one becomes `phone_pending` and is texted a code.
    #[serde(default)]
    pub phone: Option<String>,
    /// Read-only (ignored on PUT).
    #[serde(default)]
    pub phone_pending: Option<String>,
    /// Categories and whether they get them.
    #[serde(default)]
    pub categories: Vec<CategoryPreference>,
}

/// The opt-out subject of a user.
pub fn user_subject(user_id: Uuid) -> String {
    format!("user:{user_id}")
}

/// The opt-out subject of an address (guests).
pub fn email_subject(email: &str) -> String {
    format!("email:{}", email.to_lowercase())
}

/// The field errors of `update`: unsubscribing from a critical category is refused.
pub fn check(update: &PreferencesUpdate) -> Vec<(String, String)> {
    let mut errors: Vec<(String, String)> = update
        .timezone
        .as_deref()
        .filter(|tz| crate::quiet::zone(tz).is_none())
        .map(|tz| {
            // The value is echoed only when short: a client's megabyte is not repeated back.
            let named = if tz.chars().count() <= 64 {
                format!("{tz:?}")
            } else {
                "the value".to_owned()
            };
            (
                "timezone".to_owned(),
                format!(
                    "{named} is not an IANA time zone (like Europe/Madrid or America/Mexico_City)"
                ),
            )
        })
        .into_iter()
        .collect();
    if let Some(phone) = &update.phone
        && !crate::channel::sms::is_e164(phone)
    {
        errors.push((
            "phone".to_owned(),
            "must be an E.164 number: + and the country code, digits only (+34600111222)"
                .to_owned(),
        ));
    }
    errors.extend(
        update
            .categories
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.category.critical() && p.channels.get(&Channel::Email) == Some(&false)
            })
            .map(|(i, p)| {
                (
                    format!("categories[{i}].channels.email"),
                    format!(
                        "{} messages are critical and always sent by email",
                        p.category.as_str()
                    ),
                )
            }),
    );
    errors.extend(
        update
            .categories
            .iter()
            .enumerate()
            .filter(|(_, p)| p.digest.is_some() && p.category.critical())
            .map(|(i, p)| {
                (
                    format!("categories[{i}].digest"),
                    format!(
                        "{} messages are critical and sent at once",
                        p.category.as_str()
                    ),
                )
            }),
    );
    errors.extend(
        update
            .categories
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.subscribed && p.category.critical())
            .map(|(i, p)| {
                (
                    format!("categories[{i}].subscribed"),
                    format!(
                        "{} messages are critical and always sent",
                        p.category.as_str()
                    ),
                )
            }),
    );
    errors
}

/// A user's time zone and quiet hours, when they set quiet hours.
pub async fn quiet_hours(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<(Option<String>, QuietHours)>, sqlx::Error> {
    type Row = (
        Option<String>,
        Option<chrono::NaiveTime>,
        Option<chrono::NaiveTime>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT timezone, quiet_start, quiet_end FROM preferences WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some((timezone, Some(start), Some(end))) => Some((timezone, QuietHours { start, end })),
        _ => None,
    })
}

/// The categories `subjects` opted out of.
pub async fn opted_out(
    conn: &mut PgConnection,
    subjects: &[String],
) -> Result<Vec<Category>, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT category FROM opt_outs WHERE subject = ANY($1)")
            .bind(subjects)
            .fetch_all(conn)
            .await?;
    Ok(names.iter().filter_map(|n| Category::parse(n)).collect())
}

/// A user's phone number.
pub async fn phone(conn: &mut PgConnection, user_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let phone: Option<Option<String>> =
        sqlx::query_scalar("SELECT phone FROM preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(phone.flatten())
}

/// What a user chose per category and channel.
pub type ChannelChoices = Vec<(Category, Channel, bool)>;

/// A user's explicit choices per category and channel.
pub async fn channel_choices(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<ChannelChoices, sqlx::Error> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT category, channel, enabled FROM channel_preferences WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(category, channel, on)| {
            Some((Category::parse(&category)?, Channel::parse(&channel)?, on))
        })
        .collect())
}

/// Whether `category` goes out on `channel` given `chosen`: email of a critical category
/// always; otherwise the choice, else the channel's default.
pub fn enabled(chosen: &ChannelChoices, category: Category, channel: Channel) -> bool {
    if category.critical() && channel == Channel::Email {
        return true;
    }
    chosen
        .iter()
        .find(|(c, ch, _)| *c == category && *ch == channel)
        .map_or_else(|| channel.on_by_default(category), |(_, _, on)| *on)
}

/// A user's chosen locale.
pub async fn locale(conn: &mut PgConnection, user_id: Uuid) -> Result<Option<Locale>, sqlx::Error> {
    let locale: Option<Option<String>> =
        sqlx::query_scalar("SELECT locale FROM preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(locale.flatten().and_then(|l| l.parse().ok()))
}

/// What decides how one recipient of a message is reached: their settings, the categories
/// they opted out of, which of their addresses are suppressed, and whether the message was
/// recorded already. Read in one statement for each message (the consumer's path), where
/// reading it piece by piece took up to ten round trips (docs/benchmarks.md, "Checkout").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reach {
    /// Their chosen locale.
    pub locale: Option<Locale>,
    /// Their time zone, as they stored it.
    pub timezone: Option<String>,
    /// Their quiet hours, when they set them.
    pub quiet_hours: Option<QuietHours>,
    /// Their verified phone number.
    pub phone: Option<String>,
    /// Whether they registered a push device.
    pub has_device: bool,
    /// Their explicit choices per category and channel.
    pub chosen: ChannelChoices,
    /// Their digest choices.
    pub digests: Vec<(Category, crate::digests::Window)>,
    /// The categories any of the subjects opted out of.
    pub opted_out: Vec<Category>,
    /// Why each of their suppressed addresses gets nothing: `(channel, address, reason)`.
    pub suppressed: Vec<(String, String, String)>,
    /// Whether the event already has its email delivery to them (a redelivered event).
    pub delivered: bool,
}

impl Reach {
    /// Why `address` gets nothing on `channel`, if it is suppressed (as
    /// [`crate::tracking::suppressed`] reads it).
    pub fn suppression(&self, channel: Channel, address: &str) -> Option<&str> {
        let address = address.trim().to_lowercase();
        self.suppressed
            .iter()
            .find(|(c, a, _)| c == channel.as_str() && *a == address)
            .map(|(_, _, reason)| reason.as_str())
    }
}

/// [`Reach`] of event `event_id`'s message to `recipient`, whose opt-outs are under
/// `subjects`.
pub async fn reach(
    conn: &mut PgConnection,
    event_id: Uuid,
    recipient: &crate::trigger::Contact,
    subjects: &[String],
) -> Result<Reach, sqlx::Error> {
    let (user_id, email) = (recipient.user_id, recipient.email.as_str());
    type Row = (
        Option<String>,
        Option<String>,
        Option<chrono::NaiveTime>,
        Option<chrono::NaiveTime>,
        Option<String>,
        bool,
        sqlx::types::Json<Vec<(String, String, bool)>>,
        sqlx::types::Json<Vec<(String, String)>>,
        Vec<String>,
        sqlx::types::Json<Vec<(String, String, String)>>,
        bool,
    );
    // `$1` is null for a guest: every lookup by user finds nothing.
    let row: Row = sqlx::query_as(
        "SELECT p.locale, p.timezone, p.quiet_start, p.quiet_end, p.phone, \
                EXISTS (SELECT 1 FROM push_devices d WHERE d.user_id = $1), \
                COALESCE((SELECT json_agg(json_build_array(c.category, c.channel, c.enabled) \
                                     ORDER BY c.category, c.channel) \
                            FROM channel_preferences c WHERE c.user_id = $1), '[]'), \
                COALESCE((SELECT json_agg(json_build_array(g.category, g.window_kind) \
                                     ORDER BY g.category) \
                            FROM digest_settings g WHERE g.user_id = $1), '[]'), \
                ARRAY(SELECT DISTINCT o.category FROM opt_outs o WHERE o.subject = ANY($2) \
                      ORDER BY 1), \
                COALESCE((SELECT json_agg(json_build_array(s.channel, s.recipient, s.reason) \
                                     ORDER BY s.channel, s.recipient) \
                            FROM suppressions s \
                           WHERE (s.channel = 'email' AND s.recipient = $3) \
                              OR (s.channel = 'sms' AND s.recipient = p.phone) \
                              OR (s.channel = 'push' AND s.recipient = $4)), '[]'), \
                EXISTS (SELECT 1 FROM deliveries \
                         WHERE event_id = $5 AND recipient = $6 AND channel = 'email') \
           FROM (VALUES (1)) AS one (x) LEFT JOIN preferences p ON p.user_id = $1",
    )
    .bind(user_id)
    .bind(subjects)
    .bind(email.trim().to_lowercase())
    .bind(user_id.map(user_subject))
    .bind(event_id)
    .bind(email)
    .fetch_one(conn)
    .await?;
    let (
        locale,
        timezone,
        start,
        end,
        phone,
        has_device,
        chosen,
        digests,
        out,
        suppressed,
        delivered,
    ) = row;
    Ok(Reach {
        locale: locale.and_then(|l| l.parse().ok()),
        timezone,
        quiet_hours: match (start, end) {
            (Some(start), Some(end)) => Some(QuietHours { start, end }),
            _ => None,
        },
        phone,
        has_device,
        chosen: chosen
            .0
            .into_iter()
            .filter_map(|(category, channel, on)| {
                Some((Category::parse(&category)?, Channel::parse(&channel)?, on))
            })
            .collect(),
        digests: digests
            .0
            .into_iter()
            .filter_map(|(category, window)| {
                Some((
                    Category::parse(&category)?,
                    crate::digests::Window::parse(&window)?,
                ))
            })
            .collect(),
        opted_out: out.iter().filter_map(|n| Category::parse(n)).collect(),
        suppressed: suppressed.0,
        delivered,
    })
}

/// A user's preferences as they read them.
pub async fn load(conn: &mut PgConnection, user_id: Uuid) -> Result<Preferences, sqlx::Error> {
    let locale = locale(conn, user_id).await?;
    let timezone: Option<Option<String>> =
        sqlx::query_scalar("SELECT timezone FROM preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let quiet = quiet_hours(conn, user_id).await?.map(|(_, q)| q);
    let out = opted_out(conn, &[user_subject(user_id)]).await?;
    let phone = phone(conn, user_id).await?;
    let phone_pending: Option<Option<String>> =
        sqlx::query_scalar("SELECT phone_pending FROM preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let chosen = channel_choices(conn, user_id).await?;
    let digests = crate::digests::settings(conn, user_id).await?;
    Ok(Preferences {
        locale,
        timezone: timezone.flatten(),
        quiet_hours: quiet,
        phone,
        phone_pending: phone_pending.flatten(),
        categories: Category::ALL
            .into_iter()
            .map(|category| CategoryPreference {
                category,
                critical: category.critical(),
                subscribed: category.is_sent_despite(&out),
                channels: Channel::ALL
                    .into_iter()
                    .map(|channel| (channel, enabled(&chosen, category, channel)))
                    .collect(),
                digest: digests
                    .iter()
                    .find(|(c, _)| *c == category)
                    .map(|(_, w)| *w),
            })
            .collect(),
    })
}

/// Replaces a user's preferences (after [`check`]).
pub async fn save(
    conn: &mut PgConnection,
    user_id: Uuid,
    update: &PreferencesUpdate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        // The verified number stays unless the update drops it; a new one is verified first
        // (crate::phone).
        "INSERT INTO preferences (user_id, locale, timezone, quiet_start, quiet_end)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET locale = EXCLUDED.locale,
             timezone = EXCLUDED.timezone, quiet_start = EXCLUDED.quiet_start,
             quiet_end = EXCLUDED.quiet_end,
             phone = CASE WHEN $6::text IS NULL THEN NULL ELSE preferences.phone END,
             phone_pending = CASE WHEN $6::text IS NULL OR $6 = preferences.phone THEN NULL
                                  ELSE preferences.phone_pending END,
             updated_at = now()",
    )
    .bind(user_id)
    .bind(update.locale.map(Locale::as_str))
    .bind(update.timezone.as_deref())
    .bind(update.quiet_hours.map(|q| q.start))
    .bind(update.quiet_hours.map(|q| q.end))
    .bind(update.phone.as_deref())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM channel_preferences WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let (categories, channels, enabled): (Vec<&str>, Vec<&str>, Vec<bool>) = update
        .categories
        .iter()
        .flat_map(|p| {
            p.channels
                .iter()
                .map(move |(channel, on)| (p.category.as_str(), channel.as_str(), *on))
        })
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
    sqlx::query(
        "INSERT INTO channel_preferences (user_id, category, channel, enabled)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bool[])
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(&categories)
    .bind(&channels)
    .bind(&enabled)
    .execute(&mut *conn)
    .await?;
    let digests: Vec<(Category, crate::digests::Window)> = update
        .categories
        .iter()
        .filter(|p| !p.category.critical())
        .filter_map(|p| Some((p.category, p.digest?)))
        .collect();
    crate::digests::save(conn, user_id, &digests).await?;
    let subject = user_subject(user_id);
    sqlx::query("DELETE FROM opt_outs WHERE subject = $1")
        .bind(&subject)
        .execute(&mut *conn)
        .await?;
    let out: Vec<&str> = update
        .categories
        .iter()
        .filter(|p| !p.subscribed && !p.category.critical())
        .map(|p| p.category.as_str())
        .collect();
    sqlx::query(
        "INSERT INTO opt_outs (subject, category, source)
         SELECT $1, unnest($2::text[]), 'preferences' ON CONFLICT DO NOTHING",
    )
    .bind(&subject)
    .bind(&out)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an unsubscribe link's click (critical categories are never recorded).
pub async fn opt_out(
    conn: &mut PgConnection,
    subject: &str,
    category: Category,
) -> Result<(), sqlx::Error> {
    if category.critical() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO opt_outs (subject, category, source) VALUES ($1, $2, 'link')
         ON CONFLICT DO NOTHING",
    )
    .bind(subject)
    .bind(category.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribing_from_a_critical_category_names_the_field() {
        let update = PreferencesUpdate {
            locale: None,
            timezone: None,
            quiet_hours: None,
            phone: None,
            phone_pending: None,
            categories: vec![
                CategoryPreference {
                    category: Category::Marketing,
                    critical: false,
                    subscribed: false,
                    channels: BTreeMap::new(),
                    digest: None,
                },
                CategoryPreference {
                    category: Category::Security,
                    critical: true,
                    subscribed: false,
                    channels: BTreeMap::new(),
                    digest: None,
                },
            ],
        };
        let errors = check(&update);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "categories[1].subscribed");
    }

    #[test]
    fn critical_email_cannot_be_turned_off_and_marketing_texts_need_a_yes() {
        let update = PreferencesUpdate {
            locale: None,
            timezone: None,
            quiet_hours: None,
            phone: Some("600111222".into()),
            phone_pending: None,
            categories: vec![CategoryPreference {
                category: Category::Orders,
                critical: true,
                subscribed: true,
                channels: [(Channel::Email, false), (Channel::Sms, false)].into(),
                digest: None,
            }],
        };
        let fields: Vec<String> = check(&update).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["phone", "categories[0].channels.email"]);

        let none = ChannelChoices::new();
        assert!(enabled(&none, Category::Shipping, Channel::Sms));
        assert!(!enabled(&none, Category::Marketing, Channel::Sms));
        assert!(!enabled(&none, Category::Marketing, Channel::Push));
        let chosen = vec![
            (Category::Marketing, Channel::Push, true),
            (Category::Orders, Channel::Email, false),
            (Category::Orders, Channel::Sms, false),
        ];
        assert!(enabled(&chosen, Category::Marketing, Channel::Push));
        assert!(
            enabled(&chosen, Category::Orders, Channel::Email),
            "critical email stays on"
        );
        assert!(!enabled(&chosen, Category::Orders, Channel::Sms));
    }
}

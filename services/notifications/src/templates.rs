//! The message templates: a subject, a plain-text part and an HTML part per kind and locale,
//! rendered with minijinja. HTML parts escape every value (autoescape by the `.html` name);
//! an unknown variable is an error, not an empty string, so a template that names a value its
//! event does not carry fails loudly in tests instead of sending a hole.
//!
//! The shipped templates are version [`BUILTIN_VERSION`]. Admins edit a kind's templates in
//! one locale by saving a new version (`template_versions`; the newest is used, older ones
//! stay for the record and to go back to); a delivery records the version it was rendered
//! with. A version is refused at save when a part does not compile or does not render against
//! the kind's sample event, with the part and the line. Templates run sandboxed: no file or
//! network access, a fuel limit against endless loops, values escaped in HTML parts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig, value::Serde};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    channel::Channel,
    locale::Locale,
    trigger::{Kind, Links, Trigger},
};

/// The version of the templates compiled into this binary.
pub const BUILTIN_VERSION: i32 = 1;

/// One rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
    /// The short text of SMS and push (kinds sent on those channels).
    pub short: Option<String>,
    /// The template version used.
    pub version: i32,
}

/// One version's sources: a subject, a plain-text body and an HTML body (the shop's layout
/// wraps both bodies: header, footer, unsubscribe link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// One line (whitespace is folded).
    pub subject: String,
    /// The `text/plain` body.
    pub body_text: String,
    /// The `text/html` body (values are escaped).
    pub body_html: String,
    /// The short text of SMS and push messages (kinds sent on those channels); left out, the
    /// shipped one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<String>,
}

/// The templates: the shipped ones and edited versions, each compiled on first use. A
/// process mails a few kinds in a few locales; compiling every kind in every locale at start
/// held about 2 MiB of compiled templates in every process, idle or not (docs/benchmarks.md,
/// "Memory at idle").
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    edited: Mutex<HashMap<(Kind, Locale, i32), Arc<Environment<'static>>>>,
}

/// An environment with the sandbox's settings and the layouts.
fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // A template cannot loop forever or recurse without bound.
    env.set_fuel(Some(100_000));
    env.add_template_owned("layout.html", LAYOUT_HTML)?;
    env.add_template_owned("layout.txt", LAYOUT_TEXT)?;
    Ok(env)
}

/// Adds one kind's three templates in one locale. The bodies extend the layouts on their own
/// first line, so an error's line is the line of the source as written.
fn add(
    env: &mut Environment<'static>,
    kind: Kind,
    locale: Locale,
    draft: &Draft,
) -> Result<(), (&'static str, minijinja::Error)> {
    let [subject, text, html, short] = names(kind, locale);
    env.add_template_owned(subject, draft.subject.clone())
        .map_err(|e| ("subject", e))?;
    if kind.channels().len() > 1 {
        let source = draft
            .short
            .clone()
            .or_else(|| builtin_short(kind, locale).map(str::to_owned));
        if let Some(source) = source {
            env.add_template_owned(short, source)
                .map_err(|e| ("short", e))?;
        }
    }
    env.add_template_owned(text, extend("layout.txt", &draft.body_text))
        .map_err(|e| ("body_text", e))?;
    env.add_template_owned(html, extend("layout.html", &draft.body_html))
        .map_err(|e| ("body_html", e))
}

/// `body` as the body block of `layout`, on the body's own first line, so an error's line is
/// the line of the body as written.
fn extend(layout: &str, body: &str) -> String {
    format!("{{% extends \"{layout}\" %}}{{% block body %}}{body}{{% endblock %}}")
}

/// The source of the shipped template called `name` (see [`names`]; digests are
/// `digest/{locale}/…`), or `None` when nothing shipped has that name.
fn builtin_source(name: &str) -> Option<String> {
    let mut parts = name.split('/');
    let (family, locale, part) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let locale = Locale::ALL.into_iter().find(|l| l.as_str() == locale)?;
    if family == "digest" {
        let (_, subject, text, html) = DIGEST.iter().find(|(l, ..)| *l == locale)?;
        return match part {
            "subject.txt" => Some((*subject).to_owned()),
            "body.txt" => Some(extend("layout.txt", text)),
            "body.html" => Some(extend("layout.html", html)),
            _ => None,
        };
    }
    let kind = Kind::parse(family)?;
    let source = SOURCES
        .iter()
        .find(|s| s.kind == kind && s.locale == locale)?;
    match part {
        "subject.txt" => Some(source.subject.to_owned()),
        "body.txt" => Some(extend("layout.txt", source.text)),
        "body.html" => Some(extend("layout.html", source.html)),
        "short.txt" if kind.channels().len() > 1 => builtin_short(kind, locale).map(str::to_owned),
        _ => None,
    }
}

/// An error as an editor reads it: the line and what is wrong.
pub fn describe(error: &minijinja::Error) -> String {
    let what = error
        .detail()
        .map_or_else(|| error.kind().to_string(), str::to_owned);
    match error.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    }
}

/// Renders `kind`'s three templates from `env`.
fn render_in(
    env: &Environment<'static>,
    kind: Kind,
    locale: Locale,
    context: &Value,
    version: i32,
) -> Result<Rendered, (&'static str, minijinja::Error)> {
    let [subject, text, html, short] = names(kind, locale);
    let context = minijinja::Value::from(Serde(context));
    let part = |name: &str, field| {
        env.get_template(name)
            .and_then(|t| t.render(&context))
            .map_err(|e| (field, e))
    };
    let subject = part(&subject, "subject")?;
    Ok(Rendered {
        // A header is one line whatever the template did.
        subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
        text: part(&text, "body_text")?,
        html: part(&html, "body_html")?,
        short: match env.get_template(&short) {
            // One line, as an SMS or a notification shows it.
            Ok(t) => Some(
                t.render(&context)
                    .map_err(|e| ("short", e))?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(_) => None,
        },
        version,
    })
}

/// The names of one kind's templates in one locale: subject, text, HTML and short.
fn names(kind: Kind, locale: Locale) -> [String; 4] {
    let base = format!("{}/{}", kind.as_str(), locale.as_str());
    [
        format!("{base}/subject.txt"),
        format!("{base}/body.txt"),
        format!("{base}/body.html"),
        format!("{base}/short.txt"),
    ]
}

/// The shipped short text of `kind` in `locale` (kinds sent by SMS and push).
fn builtin_short(kind: Kind, locale: Locale) -> Option<&'static str> {
    SHORT
        .iter()
        .find(|(k, l, _)| *k == kind && *l == locale)
        .map(|(_, _, source)| *source)
}

impl Templates {
    /// The shipped templates, each compiled when first rendered (every one compiles and
    /// renders: tested); the layouts are compiled here, and an error names the line.
    pub fn builtin() -> Result<Self, minijinja::Error> {
        let mut env = environment()?;
        env.set_loader(|name| Ok(builtin_source(name)));
        Ok(Self {
            env,
            edited: Mutex::default(),
        })
    }

    /// Renders `kind` in `locale` with `context` from the shipped templates.
    pub fn render(
        &self,
        kind: Kind,
        locale: Locale,
        context: &Value,
    ) -> Result<Rendered, minijinja::Error> {
        render_in(&self.env, kind, locale, context, BUILTIN_VERSION).map_err(|(_, e)| e)
    }

    /// Renders a digest in `locale`: `context` has `shop`, `lang`, `unsubscribe_url`,
    /// `count` and `items` (`line`, `link`).
    pub fn render_digest(
        &self,
        locale: Locale,
        context: &Value,
    ) -> Result<Rendered, minijinja::Error> {
        let base = format!("digest/{}", locale.as_str());
        let context = minijinja::Value::from(Serde(context));
        let part = |name: &str| {
            self.env
                .get_template(&format!("{base}/{name}"))
                .and_then(|t| t.render(&context))
        };
        Ok(Rendered {
            subject: part("subject.txt")?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            text: part("body.txt")?,
            html: part("body.html")?,
            short: None,
            version: BUILTIN_VERSION,
        })
    }

    /// Renders `kind` in `locale` with `context` from edited `version` (compiled once).
    pub fn render_version(
        &self,
        kind: Kind,
        locale: Locale,
        version: i32,
        draft: &Draft,
        context: &Value,
    ) -> Result<Rendered, minijinja::Error> {
        let key = (kind, locale, version);
        let cached = self
            .edited
            .lock()
            .expect("never poisoned: no panics while held")
            .get(&key)
            .cloned();
        let env = match cached {
            Some(env) => env,
            None => {
                let mut env = environment()?;
                add(&mut env, kind, locale, draft).map_err(|(_, e)| e)?;
                let env = Arc::new(env);
                let mut edited = self
                    .edited
                    .lock()
                    .expect("never poisoned: no panics while held");
                if edited.len() >= 1_000 {
                    edited.clear();
                }
                edited.insert(key, env.clone());
                env
            }
        };
        render_in(&env, kind, locale, context, version).map_err(|(_, e)| e)
    }

    /// The shipped sources of `kind` in `locale` (version [`BUILTIN_VERSION`]).
    pub fn builtin_draft(kind: Kind, locale: Locale) -> Draft {
        SOURCES
            .iter()
            .find(|s| s.kind == kind && s.locale == locale)
            .expect("every kind is shipped in every locale (tested)")
            .draft()
    }

    /// Why `draft` cannot be saved for `kind` in `locale`, by field: a part that does not
    /// compile, or does not render against the kind's sample event (a value it does not
    /// carry, a loop that runs out of fuel), with the line.
    pub fn check(kind: Kind, locale: Locale, draft: &Draft) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (field, text, max) in [
            ("subject", &draft.subject, 1_000),
            ("body_text", &draft.body_text, 64 * 1024),
            ("body_html", &draft.body_html, 64 * 1024),
        ] {
            if text.trim().is_empty() {
                errors.push((field.to_owned(), "must not be empty".to_owned()));
            } else if text.len() > max {
                errors.push((field.to_owned(), format!("must be at most {max} bytes")));
            } else if text.contains('\0') {
                errors.push((
                    field.to_owned(),
                    "must not contain NUL characters".to_owned(),
                ));
            }
        }
        if let Some(short) = &draft.short {
            if kind.channels().len() == 1 {
                errors.push((
                    "short".to_owned(),
                    format!(
                        "{} is sent by email only: it has no short text",
                        kind.as_str()
                    ),
                ));
            } else if short.trim().is_empty() {
                errors.push(("short".to_owned(), "must not be empty".to_owned()));
            } else if short.len() > 2_000 {
                errors.push(("short".to_owned(), "must be at most 2000 bytes".to_owned()));
            } else if short.contains('\0') {
                errors.push((
                    "short".to_owned(),
                    "must not contain NUL characters".to_owned(),
                ));
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        let mut env = match environment() {
            Ok(env) => env,
            Err(e) => return vec![("template".into(), describe(&e))],
        };
        // Each part compiled alone first, so an unclosed block is reported as the editor
        // wrote it, not at the layout's wrapper.
        let short = draft.short.clone().unwrap_or_default();
        for (field, source) in [
            ("subject", &draft.subject),
            ("body_text", &draft.body_text),
            ("body_html", &draft.body_html),
            ("short", &short),
        ] {
            if let Err(e) = env.template_from_str(source) {
                errors.push((field.to_owned(), describe(&e)));
            }
        }
        if !errors.is_empty() {
            return errors;
        }
        if let Err((field, e)) = add(&mut env, kind, locale, draft) {
            return vec![(field.to_owned(), describe(&e))];
        }
        let links = Links {
            public_url: "https://shop.example".into(),
            shop: "Tienda".into(),
        };
        let sample = Trigger::sample(kind);
        // Rendered both ways: with the unsubscribe link a non-critical message carries, and
        // without (the critical ones).
        for unsubscribe in [
            Some("https://shop.example/v1/notifications/unsubscribe?token=t"),
            None,
        ] {
            let context = sample.context(locale, &links, unsubscribe);
            if let Err((field, e)) = render_in(&env, kind, locale, &context, 0) {
                return vec![(field.to_owned(), describe(&e))];
            }
        }
        Vec::new()
    }

    /// `draft` rendered against `kind`'s sample event (the preview).
    pub fn preview(
        &self,
        kind: Kind,
        locale: Locale,
        version: i32,
        draft: &Draft,
        links: &Links,
    ) -> Result<Rendered, minijinja::Error> {
        let unsubscribe = (!kind.category().critical()).then(|| {
            format!(
                "{}/v1/notifications/unsubscribe?token=preview",
                links.public_url
            )
        });
        let context = Trigger::sample(kind).context(locale, links, unsubscribe.as_deref());
        if version == BUILTIN_VERSION {
            self.render(kind, locale, &context)
        } else {
            self.render_version(kind, locale, version, draft, &context)
        }
    }
}

/// A campaign's content in one locale: the parts its channel needs (email: `subject`,
/// `body_text`, `body_html`; SMS: `short`; push: `subject` and `short`). Values: `name`,
/// `email`, `shop`, `lang`, and `unsubscribe_url` (email).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignContent {
    /// The subject (email) or title (push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The `text/plain` body (email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    /// The `text/html` body (email; values are escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_html: Option<String>,
    /// The one line of SMS and push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<String>,
}

/// A campaign's compiled content, every locale it is written in.
#[derive(Debug)]
pub struct CampaignTemplates {
    env: Environment<'static>,
    channel: Channel,
    locales: Vec<Locale>,
}

impl CampaignTemplates {
    /// Compiles `content` for `channel`; the errors by field (`content.es.subject`), with
    /// the line, when a part is missing, too long, does not compile or does not render
    /// against a sample person.
    pub fn compile(
        channel: Channel,
        content: &std::collections::BTreeMap<Locale, CampaignContent>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if content.is_empty() {
            errors.push((
                "content".to_owned(),
                "must have at least one locale".to_owned(),
            ));
        }
        let mut env = environment().map_err(|e| vec![("content".to_owned(), describe(&e))])?;
        for (locale, parts) in content {
            let wanted: &[(&str, &Option<String>, usize)] = match channel {
                Channel::Email => &[
                    ("subject", &parts.subject, 1_000),
                    ("body_text", &parts.body_text, 64 * 1024),
                    ("body_html", &parts.body_html, 64 * 1024),
                ],
                Channel::Sms => &[("short", &parts.short, 2_000)],
                Channel::Push => &[
                    ("subject", &parts.subject, 1_000),
                    ("short", &parts.short, 2_000),
                ],
            };
            for (field, given) in [
                ("subject", &parts.subject),
                ("body_text", &parts.body_text),
                ("body_html", &parts.body_html),
                ("short", &parts.short),
            ] {
                if given.is_some() && !wanted.iter().any(|(w, _, _)| *w == field) {
                    errors.push((
                        format!("content.{locale}.{field}"),
                        format!("is not used by {}", channel.as_str()),
                    ));
                }
            }
            for (field, text, max) in wanted {
                let name = format!("content.{locale}.{field}");
                let source = match text {
                    Some(t) if t.trim().is_empty() => {
                        errors.push((name, "must not be empty".to_owned()));
                        continue;
                    }
                    Some(t) if t.len() > *max => {
                        errors.push((name, format!("must be at most {max} bytes")));
                        continue;
                    }
                    Some(t) if t.contains('\0') => {
                        errors.push((name, "must not contain NUL characters".to_owned()));
                        continue;
                    }
                    Some(t) => t.clone(),
                    None => {
                        errors.push((name, format!("is required for {}", channel.as_str())));
                        continue;
                    }
                };
                if let Err(e) = env.template_from_str(&source) {
                    errors.push((name, describe(&e)));
                    continue;
                }
                let wrapped = match *field {
                    "body_text" => format!(
                        "{{% extends \"layout.txt\" %}}{{% block body %}}{source}{{% endblock %}}"
                    ),
                    "body_html" => format!(
                        "{{% extends \"layout.html\" %}}{{% block body %}}{source}{{% endblock %}}"
                    ),
                    _ => source,
                };
                if let Err(e) = env.add_template_owned(campaign_name(*locale, field), wrapped) {
                    errors.push((name, describe(&e)));
                }
            }
        }
        let compiled = Self {
            env,
            channel,
            locales: content.keys().copied().collect(),
        };
        if errors.is_empty() {
            for locale in &compiled.locales {
                let sample = serde_json::json!({
                    "name": "Ada", "email": "ada@example.com", "shop": "Tienda",
                    "lang": locale.as_str(),
                    "unsubscribe_url": "https://shop.example/v1/notifications/unsubscribe?token=t",
                });
                if let Err((field, e)) = compiled.render_parts(*locale, &sample) {
                    errors.push((format!("content.{locale}.{field}"), describe(&e)));
                }
            }
        }
        if errors.is_empty() {
            Ok(compiled)
        } else {
            Err(errors)
        }
    }

    /// The locale a person reading `preferred` gets: theirs when the campaign is written in
    /// it, else the campaign's first.
    pub fn locale_for(&self, preferred: Locale) -> Locale {
        if self.locales.contains(&preferred) {
            preferred
        } else {
            self.locales[0]
        }
    }

    /// Renders for one person (`context`: `name`, `email`, `shop`, `lang`,
    /// `unsubscribe_url`) in `locale` (from [`CampaignTemplates::locale_for`]).
    pub fn render(&self, locale: Locale, context: &Value) -> Result<Rendered, minijinja::Error> {
        self.render_parts(locale, context).map_err(|(_, e)| e)
    }

    fn render_parts(
        &self,
        locale: Locale,
        context: &Value,
    ) -> Result<Rendered, (&'static str, minijinja::Error)> {
        let context = minijinja::Value::from(Serde(context));
        let part = |field: &'static str| -> Result<String, (&'static str, minijinja::Error)> {
            let wanted = !matches!(
                (self.channel, field),
                (Channel::Email, "short")
                    | (Channel::Sms, "subject" | "body_text" | "body_html")
                    | (Channel::Push, "body_text" | "body_html")
            );
            if !wanted {
                return Ok(String::new());
            }
            self.env
                .get_template(&campaign_name(locale, field))
                .and_then(|t| t.render(&context))
                .map_err(|e| (field, e))
        };
        let one_line = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Rendered {
            subject: one_line(part("subject")?),
            text: part("body_text")?,
            html: part("body_html")?,
            short: Some(one_line(part("short")?)),
            version: 0,
        })
    }
}

fn campaign_name(locale: Locale, field: &str) -> String {
    format!("campaign/{}/{field}", locale.as_str())
        + if field == "body_html" {
            ".html"
        } else {
            ".txt"
        }
}

struct Source {
    kind: Kind,
    locale: Locale,
    subject: &'static str,
    text: &'static str,
    html: &'static str,
}

impl Source {
    fn draft(&self) -> Draft {
        Draft {
            subject: self.subject.to_owned(),
            body_text: self.text.to_owned(),
            body_html: self.html.to_owned(),
            short: builtin_short(self.kind, self.locale).map(str::to_owned),
        }
    }
}

const LAYOUT_TEXT: &str = "{% block body %}{% endblock %}

--
{{ shop }}
{% if unsubscribe_url %}
{% if lang == \"es\" %}Darse de baja de estos mensajes{% else %}Unsubscribe from these messages{% endif %}: {{ unsubscribe_url }}
{% endif %}
";

const LAYOUT_HTML: &str = "<!DOCTYPE html>
<html lang=\"{{ lang }}\">
<head><meta charset=\"utf-8\"><title>{{ shop }}</title></head>
<body style=\"font-family: sans-serif; color: #222;\">
{% block body %}{% endblock %}
<hr>
<p style=\"color: #777; font-size: 12px;\">{{ shop }}
{% if unsubscribe_url %}
 · <a href=\"{{ unsubscribe_url }}\">{% if lang == \"es\" %}Darse de baja{% else %}Unsubscribe{% endif %}</a>
{% endif %}
</p>
</body>
</html>
";

/// The digest: a subject, a text and an HTML body per locale.
const DIGEST: &[(Locale, &str, &str, &str)] = &[
    (
        Locale::Es,
        "{{ shop }}: {{ count }} {% if count == 1 %}novedad{% else %}novedades{% endif %}",
        "Esto es lo que ha pasado:

{% for item in items %}
- {{ item.line }}{% if item.link %} {{ item.link }}{% endif %}

{% endfor %}",
        "<p>Esto es lo que ha pasado:</p>
<ul>
{% for item in items %}
<li>{% if item.link %}<a href=\"{{ item.link }}\">{{ item.line }}</a>{% else %}{{ item.line }}{% endif %}</li>
{% endfor %}
</ul>
",
    ),
    (
        Locale::En,
        "{{ shop }}: {{ count }} {% if count == 1 %}update{% else %}updates{% endif %}",
        "Here is what happened:

{% for item in items %}
- {{ item.line }}{% if item.link %} {{ item.link }}{% endif %}

{% endfor %}",
        "<p>Here is what happened:</p>
<ul>
{% for item in items %}
<li>{% if item.link %}<a href=\"{{ item.link }}\">{{ item.line }}</a>{% else %}{{ item.line }}{% endif %}</li>
{% endfor %}
</ul>
",
    ),
];

/// The short texts of SMS and push messages: one line, the link to the order.
const SHORT: &[(Kind, Locale, &str)] = &[
    (
        Kind::OrderConfirmed,
        Locale::Es,
        "{{ shop }}: tu pedido {{ order_id }} está confirmado ({{ total }}). {{ order_url }}",
    ),
    (
        Kind::OrderConfirmed,
        Locale::En,
        "{{ shop }}: your order {{ order_id }} is confirmed ({{ total }}). {{ order_url }}",
    ),
    (
        Kind::OrderCancelled,
        Locale::Es,
        "{{ shop }}: tu pedido {{ order_id }} se ha cancelado. {{ order_url }}",
    ),
    (
        Kind::OrderCancelled,
        Locale::En,
        "{{ shop }}: your order {{ order_id }} was cancelled. {{ order_url }}",
    ),
    (
        Kind::OrderShipped,
        Locale::Es,
        "{{ shop }}: tu pedido va de camino con {{ carrier }} ({{ tracking_number }}). {{ order_url }}",
    ),
    (
        Kind::OrderShipped,
        Locale::En,
        "{{ shop }}: your order is on its way with {{ carrier }} ({{ tracking_number }}). {{ order_url }}",
    ),
    (
        Kind::OrderDelivered,
        Locale::Es,
        "{{ shop }}: tu pedido {{ order_id }} se ha entregado. {{ order_url }}",
    ),
    (
        Kind::OrderDelivered,
        Locale::En,
        "{{ shop }}: your order {{ order_id }} was delivered. {{ order_url }}",
    ),
    (
        Kind::OrderRefunded,
        Locale::Es,
        "{{ shop }}: te hemos devuelto {{ amount }} del pedido {{ order_id }}.",
    ),
    (
        Kind::OrderRefunded,
        Locale::En,
        "{{ shop }}: we refunded {{ amount }} for order {{ order_id }}.",
    ),
    (
        Kind::PaymentDeclined,
        Locale::Es,
        "{{ shop }}: el pago del pedido {{ order_id }} no se ha aceptado. {{ order_url }}",
    ),
    (
        Kind::PaymentDeclined,
        Locale::En,
        "{{ shop }}: the payment for order {{ order_id }} was declined. {{ order_url }}",
    ),
    (
        Kind::PaymentRequiresAction,
        Locale::Es,
        "{{ shop }}: confirma el pago del pedido {{ order_id }} antes del {{ expires_at }}: {{ action_url }}",
    ),
    (
        Kind::PaymentRequiresAction,
        Locale::En,
        "{{ shop }}: confirm the payment for order {{ order_id }} by {{ expires_at }}: {{ action_url }}",
    ),
];

const SOURCES: &[Source] = &[
    Source {
        kind: Kind::Welcome,
        locale: Locale::Es,
        subject: "Te damos la bienvenida a {{ shop }}, {{ name }}",
        text: "Hola, {{ name }}:

Tu cuenta en {{ shop }} ya está creada con la dirección {{ email }}.
",
        html: "<p>Hola, {{ name }}:</p>
<p>Tu cuenta en {{ shop }} ya está creada con la dirección {{ email }}.</p>
",
    },
    Source {
        kind: Kind::Welcome,
        locale: Locale::En,
        subject: "Welcome to {{ shop }}, {{ name }}",
        text: "Hi {{ name }},

Your {{ shop }} account is ready, with the address {{ email }}.
",
        html: "<p>Hi {{ name }},</p>
<p>Your {{ shop }} account is ready, with the address {{ email }}.</p>
",
    },
    Source {
        kind: Kind::PasswordReset,
        locale: Locale::Es,
        subject: "Restablece tu contraseña de {{ shop }}",
        text: "Alguien (esperamos que tú) pidió restablecer la contraseña de {{ email }}.

Elige una nueva aquí: {{ reset_url }}

El enlace caduca el {{ expires_at }}. Si no lo pediste, ignora este mensaje.
",
        html: "<p>Alguien (esperamos que tú) pidió restablecer la contraseña de {{ email }}.</p>
<p><a href=\"{{ reset_url }}\">Elige una contraseña nueva</a></p>
<p>El enlace caduca el {{ expires_at }}. Si no lo pediste, ignora este mensaje.</p>
",
    },
    Source {
        kind: Kind::PasswordReset,
        locale: Locale::En,
        subject: "Reset your {{ shop }} password",
        text: "Someone (we hope you) asked to reset the password of {{ email }}.

Choose a new one here: {{ reset_url }}

The link expires at {{ expires_at }}. If it was not you, ignore this message.
",
        html: "<p>Someone (we hope you) asked to reset the password of {{ email }}.</p>
<p><a href=\"{{ reset_url }}\">Choose a new password</a></p>
<p>The link expires at {{ expires_at }}. If it was not you, ignore this message.</p>
",
    },
    Source {
        kind: Kind::EmailVerification,
        locale: Locale::Es,
        subject: "Confirma tu dirección en {{ shop }}",
        text: "Confirma que {{ email }} es tu dirección de correo en {{ shop }}:

{{ verify_url }}

El enlace caduca el {{ expires_at }}. Si no creaste esta cuenta, ignora este mensaje.
",
        html: "<p>Confirma que {{ email }} es tu dirección de correo en {{ shop }}.</p>
<p><a href=\"{{ verify_url }}\">Confirmar mi dirección</a></p>
<p>El enlace caduca el {{ expires_at }}. Si no creaste esta cuenta, ignora este mensaje.</p>
",
    },
    Source {
        kind: Kind::EmailVerification,
        locale: Locale::En,
        subject: "Confirm your address at {{ shop }}",
        text: "Confirm that {{ email }} is your email address at {{ shop }}:

{{ verify_url }}

The link expires at {{ expires_at }}. If you did not create this account, ignore this message.
",
        html: "<p>Confirm that {{ email }} is your email address at {{ shop }}.</p>
<p><a href=\"{{ verify_url }}\">Confirm my address</a></p>
<p>The link expires at {{ expires_at }}. If you did not create this account, ignore this message.</p>
",
    },
    Source {
        kind: Kind::RegistrationAttempted,
        locale: Locale::Es,
        subject: "Alguien intentó registrarse en {{ shop }} con tu dirección",
        text: "Alguien intentó crear una cuenta en {{ shop }} con {{ email }}, que ya tiene una.

Si fuiste tú, inicia sesión: {{ sign_in_url }}
¿Olvidaste la contraseña? Restablécela: {{ reset_url }}

Si no fuiste tú, no tienes que hacer nada: tu cuenta no ha cambiado.
",
        html: "<p>Alguien intentó crear una cuenta en {{ shop }} con {{ email }}, que ya tiene una.</p>
<p>Si fuiste tú, <a href=\"{{ sign_in_url }}\">inicia sesión</a> o <a href=\"{{ reset_url }}\">restablece la contraseña</a>.</p>
<p>Si no fuiste tú, no tienes que hacer nada: tu cuenta no ha cambiado.</p>
",
    },
    Source {
        kind: Kind::RegistrationAttempted,
        locale: Locale::En,
        subject: "Someone tried to sign up at {{ shop }} with your address",
        text: "Someone tried to create a {{ shop }} account with {{ email }}, which already has one.

If it was you, sign in: {{ sign_in_url }}
Forgot the password? Reset it: {{ reset_url }}

If it was not you, there is nothing to do: your account has not changed.
",
        html: "<p>Someone tried to create a {{ shop }} account with {{ email }}, which already has one.</p>
<p>If it was you, <a href=\"{{ sign_in_url }}\">sign in</a> or <a href=\"{{ reset_url }}\">reset the password</a>.</p>
<p>If it was not you, there is nothing to do: your account has not changed.</p>
",
    },
    Source {
        kind: Kind::OrderPlaced,
        locale: Locale::Es,
        subject: "Hemos recibido tu pedido {{ order_id }}",
        text: "Gracias por tu pedido. Lo estamos procesando.

{% for item in items %}
{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})
{% endfor %}
Total: {{ total }}

Sigue tu pedido: {{ order_url }}
",
        html: "<p>Gracias por tu pedido. Lo estamos procesando.</p>
<ul>
{% for item in items %}
<li>{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})</li>
{% endfor %}
</ul>
<p>Total: <strong>{{ total }}</strong></p>
<p><a href=\"{{ order_url }}\">Sigue tu pedido</a></p>
",
    },
    Source {
        kind: Kind::OrderPlaced,
        locale: Locale::En,
        subject: "We received your order {{ order_id }}",
        text: "Thank you for your order. We are processing it.

{% for item in items %}
{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})
{% endfor %}
Total: {{ total }}

Follow your order: {{ order_url }}
",
        html: "<p>Thank you for your order. We are processing it.</p>
<ul>
{% for item in items %}
<li>{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})</li>
{% endfor %}
</ul>
<p>Total: <strong>{{ total }}</strong></p>
<p><a href=\"{{ order_url }}\">Follow your order</a></p>
",
    },
    Source {
        kind: Kind::OrderConfirmed,
        locale: Locale::Es,
        subject: "Pedido {{ order_id }} confirmado",
        text: "Tu pago está autorizado y tu pedido confirmado.

{% for item in items %}
{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})
{% endfor %}
Total: {{ total }}

Sigue tu pedido: {{ order_url }}
",
        html: "<p>Tu pago está autorizado y tu pedido confirmado.</p>
<ul>
{% for item in items %}
<li>{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})</li>
{% endfor %}
</ul>
<p>Total: <strong>{{ total }}</strong></p>
<p><a href=\"{{ order_url }}\">Sigue tu pedido</a></p>
",
    },
    Source {
        kind: Kind::OrderConfirmed,
        locale: Locale::En,
        subject: "Order {{ order_id }} confirmed",
        text: "Your payment is authorized and your order confirmed.

{% for item in items %}
{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})
{% endfor %}
Total: {{ total }}

Follow your order: {{ order_url }}
",
        html: "<p>Your payment is authorized and your order confirmed.</p>
<ul>
{% for item in items %}
<li>{{ item.quantity }} × {{ item.name }} ({{ item.unit_price }})</li>
{% endfor %}
</ul>
<p>Total: <strong>{{ total }}</strong></p>
<p><a href=\"{{ order_url }}\">Follow your order</a></p>
",
    },
    Source {
        kind: Kind::OrderCancelled,
        locale: Locale::Es,
        subject: "Pedido {{ order_id }} cancelado",
        text: "Tu pedido se ha cancelado: {{ detail }}

No se te ha cobrado nada por él, o se te devolverá.
",
        html: "<p>Tu pedido se ha cancelado: {{ detail }}</p>
<p>No se te ha cobrado nada por él, o se te devolverá.</p>
",
    },
    Source {
        kind: Kind::OrderCancelled,
        locale: Locale::En,
        subject: "Order {{ order_id }} cancelled",
        text: "Your order was cancelled: {{ detail }}

You have not been charged for it, or the charge will be returned.
",
        html: "<p>Your order was cancelled: {{ detail }}</p>
<p>You have not been charged for it, or the charge will be returned.</p>
",
    },
    Source {
        kind: Kind::OrderShipped,
        locale: Locale::Es,
        subject: "Tu pedido {{ order_id }} está en camino",
        text: "Tu pedido ha salido con {{ carrier }}. Número de seguimiento: {{ tracking_number }}.

Sigue tu pedido: {{ order_url }}
",
        html: "<p>Tu pedido ha salido con {{ carrier }}. Número de seguimiento: \
<strong>{{ tracking_number }}</strong>.</p>
<p><a href=\"{{ order_url }}\">Sigue tu pedido</a></p>
",
    },
    Source {
        kind: Kind::OrderShipped,
        locale: Locale::En,
        subject: "Your order {{ order_id }} is on its way",
        text: "Your order left with {{ carrier }}. Tracking number: {{ tracking_number }}.

Follow your order: {{ order_url }}
",
        html: "<p>Your order left with {{ carrier }}. Tracking number: \
<strong>{{ tracking_number }}</strong>.</p>
<p><a href=\"{{ order_url }}\">Follow your order</a></p>
",
    },
    Source {
        kind: Kind::OrderDelivered,
        locale: Locale::Es,
        subject: "Pedido {{ order_id }} entregado",
        text: "Tu pedido se entregó el {{ delivered_at }}. ¡Que lo disfrutes!
",
        html: "<p>Tu pedido se entregó el {{ delivered_at }}. ¡Que lo disfrutes!</p>
",
    },
    Source {
        kind: Kind::OrderDelivered,
        locale: Locale::En,
        subject: "Order {{ order_id }} delivered",
        text: "Your order was delivered at {{ delivered_at }}. Enjoy!
",
        html: "<p>Your order was delivered at {{ delivered_at }}. Enjoy!</p>
",
    },
    Source {
        kind: Kind::OrderRefunded,
        locale: Locale::Es,
        subject: "Reembolso de {{ amount }} del pedido {{ order_id }}",
        text: "Te hemos devuelto {{ amount }}. Reembolsado en total: {{ refunded_total }}\
{% if full %} (el pedido completo){% endif %}.
",
        html: "<p>Te hemos devuelto <strong>{{ amount }}</strong>. Reembolsado en total: \
{{ refunded_total }}{% if full %} (el pedido completo){% endif %}.</p>
",
    },
    Source {
        kind: Kind::OrderRefunded,
        locale: Locale::En,
        subject: "Refund of {{ amount }} for order {{ order_id }}",
        text: "We refunded {{ amount }}. Refunded in total: {{ refunded_total }}\
{% if full %} (the whole order){% endif %}.
",
        html: "<p>We refunded <strong>{{ amount }}</strong>. Refunded in total: \
{{ refunded_total }}{% if full %} (the whole order){% endif %}.</p>
",
    },
    Source {
        kind: Kind::PaymentDeclined,
        locale: Locale::Es,
        subject: "No se pudo cobrar el pedido {{ order_id }}",
        text: "Tu banco rechazó el pago: {{ message }}

Puedes intentarlo con otro medio de pago: {{ order_url }}
",
        html: "<p>Tu banco rechazó el pago: {{ message }}</p>
<p><a href=\"{{ order_url }}\">Inténtalo con otro medio de pago</a></p>
",
    },
    Source {
        kind: Kind::PaymentDeclined,
        locale: Locale::En,
        subject: "Payment for order {{ order_id }} declined",
        text: "Your bank declined the payment: {{ message }}

You can try another payment method: {{ order_url }}
",
        html: "<p>Your bank declined the payment: {{ message }}</p>
<p><a href=\"{{ order_url }}\">Try another payment method</a></p>
",
    },
    Source {
        kind: Kind::PaymentRequiresAction,
        locale: Locale::Es,
        subject: "Confirma el pago del pedido {{ order_id }}",
        text: "Tu banco pide que confirmes el pago antes del {{ expires_at }}: {{ action_url }}
",
        html: "<p>Tu banco pide que confirmes el pago antes del {{ expires_at }}.</p>
<p><a href=\"{{ action_url }}\">Confirmar el pago</a></p>
",
    },
    Source {
        kind: Kind::PaymentRequiresAction,
        locale: Locale::En,
        subject: "Confirm the payment for order {{ order_id }}",
        text: "Your bank asks you to confirm the payment before {{ expires_at }}: {{ action_url }}
",
        html: "<p>Your bank asks you to confirm the payment before {{ expires_at }}.</p>
<p><a href=\"{{ action_url }}\">Confirm the payment</a></p>
",
    },
    Source {
        kind: Kind::InvoiceReady,
        locale: Locale::Es,
        subject: "Tu factura del pedido {{ order_id }}",
        text: "Hemos cobrado {{ amount }} del pedido {{ order_id }} y tu factura está lista.

Descárgala aquí: {{ invoices_url }}
Tu pedido: {{ order_url }}
",
        html: "<p>Hemos cobrado {{ amount }} del pedido {{ order_id }} y tu factura está lista.</p>
<p><a href=\"{{ invoices_url }}\">Descargar la factura</a> · <a href=\"{{ order_url }}\">Ver el pedido</a></p>
",
    },
    Source {
        kind: Kind::InvoiceReady,
        locale: Locale::En,
        subject: "Your invoice for order {{ order_id }}",
        text: "We charged {{ amount }} for order {{ order_id }} and your invoice is ready.

Download it here: {{ invoices_url }}
Your order: {{ order_url }}
",
        html: "<p>We charged {{ amount }} for order {{ order_id }} and your invoice is ready.</p>
<p><a href=\"{{ invoices_url }}\">Download the invoice</a> · <a href=\"{{ order_url }}\">See the order</a></p>
",
    },
];

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use tienda_events::{order::OrderShipped, user::UserRegistered};
    use uuid::Uuid;

    use super::*;
    use crate::trigger::{Links, Trigger};

    fn links() -> Links {
        Links {
            public_url: "https://shop.example".into(),
            shop: "Tienda".into(),
        }
    }

    #[test]
    fn every_kind_renders_in_every_locale_from_its_own_event() {
        let templates = Templates::builtin().unwrap();
        for kind in Kind::ALL {
            for locale in Locale::ALL {
                assert!(
                    SOURCES.iter().any(|s| s.kind == kind && s.locale == locale),
                    "{} has no {locale} template",
                    kind.as_str()
                );
            }
        }
        let shipped = Trigger::OrderShipped(OrderShipped {
            order_id: Uuid::now_v7(),
            customer_id: None,
            email: "a@example.com".into(),
            carrier: "Correos".into(),
            tracking_number: "PK123".into(),
        });
        for locale in Locale::ALL {
            let context = shipped.context(locale, &links(), Some("https://u.example/x"));
            let rendered = templates
                .render(Kind::OrderShipped, locale, &context)
                .unwrap();
            assert!(rendered.text.contains("PK123"), "{}", rendered.text);
            // minijinja's HTML escaping writes `/` as `&#x2f;` (valid in an attribute).
            assert!(
                rendered
                    .html
                    .contains("href=\"https:&#x2f;&#x2f;u.example&#x2f;x\"")
            );
            assert_eq!(rendered.version, BUILTIN_VERSION);
            let short = rendered.short.expect("shipped messages have a short text");
            assert!(short.contains("PK123") && !short.contains('\n'), "{short}");
        }
    }

    #[test]
    fn a_short_text_is_checked_and_refused_for_kinds_sent_by_email_only() {
        let mut draft = Templates::builtin_draft(Kind::OrderShipped, Locale::En);
        draft.short = Some("{{ shop }}: {% if carrier %}on its way".into());
        let errors = Templates::check(Kind::OrderShipped, Locale::En, &draft);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "short");
        draft.short = Some("on its way\0".into());
        assert_eq!(
            Templates::check(Kind::OrderShipped, Locale::En, &draft)[0].0,
            "short"
        );
        let mut welcome = Templates::builtin_draft(Kind::Welcome, Locale::En);
        welcome.short = Some("Hi".into());
        let errors = Templates::check(Kind::Welcome, Locale::En, &welcome);
        assert!(errors[0].1.contains("email only"), "{errors:?}");
        let mut nul = Templates::builtin_draft(Kind::Welcome, Locale::En);
        nul.subject.push('\0');
        assert_eq!(
            Templates::check(Kind::Welcome, Locale::En, &nul)[0].0,
            "subject"
        );
    }

    #[test]
    fn kinds_sent_by_sms_and_push_have_a_short_text_in_every_locale_and_the_others_none() {
        let templates = Templates::builtin().unwrap();
        for kind in Kind::ALL {
            for locale in Locale::ALL {
                let context = Trigger::sample(kind).context(locale, &links(), None);
                let rendered = templates.render(kind, locale, &context).unwrap();
                assert_eq!(
                    rendered.short.is_some(),
                    kind.channels().len() > 1,
                    "{} in {locale}",
                    kind.as_str()
                );
            }
        }
    }

    #[test]
    fn the_html_part_escapes_values_and_the_text_part_does_not() {
        let templates = Templates::builtin().unwrap();
        let welcome = Trigger::Welcome(UserRegistered {
            user_id: Uuid::now_v7(),
            email: "a@example.com".into(),
            name: "<script>Tom & Jerry</script>".into(),
            roles: vec![],
        });
        let context = welcome.context(Locale::En, &links(), None);
        let rendered = templates
            .render(Kind::Welcome, Locale::En, &context)
            .unwrap();
        assert!(rendered.html.contains("&lt;script&gt;Tom &amp; Jerry"));
        assert!(!rendered.html.contains("<script>"));
        assert!(rendered.text.contains("Hi <script>Tom & Jerry</script>,"));
        assert_eq!(
            rendered.subject,
            "Welcome to Tienda, <script>Tom & Jerry</script>"
        );
    }

    #[test]
    fn a_critical_message_has_no_unsubscribe_footer() {
        let templates = Templates::builtin().unwrap();
        let context = json!({"shop": "Tienda", "lang": "es", "unsubscribe_url": null,
            "email": "a@example.com", "reset_url": "https://s/r?token=t",
            "expires_at": Utc::now().to_rfc3339()});
        let rendered = templates
            .render(Kind::PasswordReset, Locale::Es, &context)
            .unwrap();
        assert!(rendered.text.contains("https://s/r?token=t"));
        assert!(!rendered.text.contains("Darse de baja"));
        assert!(rendered.subject.starts_with("Restablece"));
    }

    #[test]
    fn every_shipped_template_compiles_on_first_use_and_nothing_else_is_found() {
        let templates = Templates::builtin().unwrap();
        let mut found = 0;
        for locale in Locale::ALL {
            let mut families = vec![(format!("digest/{}", locale.as_str()), false)];
            for kind in Kind::ALL {
                let [subject, ..] = names(kind, locale);
                let base = subject.trim_end_matches("/subject.txt").to_owned();
                families.push((base, kind.channels().len() > 1));
            }
            for (base, short) in families {
                for part in ["subject.txt", "body.txt", "body.html"] {
                    let name = format!("{base}/{part}");
                    templates.env.get_template(&name).unwrap_or_else(|e| {
                        panic!("{name}: {}", describe(&e));
                    });
                    found += 1;
                }
                let short_one = templates.env.get_template(&format!("{base}/short.txt"));
                assert_eq!(short_one.is_ok(), short, "{base}/short.txt");
            }
        }
        assert_eq!(found, 3 * Locale::ALL.len() * (Kind::ALL.len() + 1));
        for unknown in [
            "welcome/fr/subject.txt",
            "welcome/es/footer.txt",
            "nope/es/subject.txt",
            "welcome/es/subject.txt/x",
            "welcome",
            "digest/en/short.txt",
        ] {
            assert!(templates.env.get_template(unknown).is_err(), "{unknown}");
        }
    }

    #[test]
    fn every_shipped_template_passes_the_save_check() {
        for kind in Kind::ALL {
            for locale in Locale::ALL {
                let draft = Templates::builtin_draft(kind, locale);
                assert_eq!(
                    Templates::check(kind, locale, &draft),
                    [],
                    "{}",
                    kind.as_str()
                );
            }
        }
    }

    #[test]
    fn a_bad_edit_is_refused_naming_the_part_and_the_line() {
        let mut draft = Templates::builtin_draft(Kind::OrderShipped, Locale::En);
        draft.body_html = "<p>Hello</p>\n<p>{% if carrier %}Sent</p>\n".into();
        let errors = Templates::check(Kind::OrderShipped, Locale::En, &draft);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "body_html");
        assert!(errors[0].1.starts_with("line 2"), "{errors:?}");

        let mut draft = Templates::builtin_draft(Kind::OrderShipped, Locale::En);
        draft.body_text = "Line one\nYour {{ parcel_colour }} parcel\n".into();
        let errors = Templates::check(Kind::OrderShipped, Locale::En, &draft);
        assert_eq!(errors[0].0, "body_text");
        assert!(errors[0].1.starts_with("line 2"), "{errors:?}");

        let mut draft = Templates::builtin_draft(Kind::Welcome, Locale::Es);
        draft.subject =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                .into();
        let errors = Templates::check(Kind::Welcome, Locale::Es, &draft);
        assert_eq!(errors[0].0, "subject", "out of fuel: {errors:?}");

        draft.subject = " ".into();
        assert_eq!(
            Templates::check(Kind::Welcome, Locale::Es, &draft)[0].1,
            "must not be empty"
        );
    }

    #[test]
    fn an_edited_version_renders_with_its_own_number() {
        let templates = Templates::builtin().unwrap();
        let draft = Draft {
            subject: "¡{{ name }}, ya estás dentro!".into(),
            body_text: "Hola {{ name }}\n".into(),
            body_html: "<p>Hola {{ name }}</p>\n".into(),
            short: None,
        };
        let context = Trigger::sample(Kind::Welcome).context(Locale::Es, &links(), None);
        let rendered = templates
            .render_version(Kind::Welcome, Locale::Es, 3, &draft, &context)
            .unwrap();
        assert_eq!(rendered.subject, "¡Ada, ya estás dentro!");
        assert_eq!(rendered.version, 3);
        assert!(rendered.html.contains("<p>Hola Ada</p>"));
        assert!(rendered.html.contains("</html>"), "in the layout");
    }

    #[test]
    fn a_value_the_event_does_not_carry_is_an_error_not_a_blank() {
        let templates = Templates::builtin().unwrap();
        let context = json!({"shop": "Tienda", "lang": "en", "unsubscribe_url": null});
        let error = templates
            .render(Kind::Welcome, Locale::En, &context)
            .unwrap_err();
        assert_eq!(error.kind(), minijinja::ErrorKind::UndefinedError);
    }
}

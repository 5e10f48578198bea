//! The message templates: a subject, a plain-text part and an HTML part per kind and locale,
//! rendered with minijinja. HTML parts escape every value (autoescape by the `.html` name);
//! an unknown variable is an error, not an empty string, so a template that names a value its
//! event does not carry fails loudly in tests instead of sending a hole.
//!
//! The shipped templates are version [`BUILTIN_VERSION`]; a delivery records the version it
//! was rendered with. (Editable templates stored per version are not built yet.)

use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig, value::Serde};
use serde_json::Value;

use crate::{locale::Locale, trigger::Kind};

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
    /// The template version used.
    pub version: i32,
}

/// The compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

/// The names of one kind's three templates in one locale.
fn names(kind: Kind, locale: Locale) -> [String; 3] {
    let base = format!("{}/{}", kind.as_str(), locale.as_str());
    [
        format!("{base}/subject.txt"),
        format!("{base}/body.txt"),
        format!("{base}/body.html"),
    ]
}

impl Templates {
    /// Compiles the shipped templates; an error names the template and line.
    pub fn builtin() -> Result<Self, minijinja::Error> {
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
        for source in SOURCES {
            let [subject, text, html] = names(source.kind, source.locale);
            env.add_template_owned(subject, source.subject)?;
            env.add_template_owned(
                text,
                format!(
                    "{{% extends \"layout.txt\" %}}{{% block body %}}{}{{% endblock %}}",
                    source.text
                ),
            )?;
            env.add_template_owned(
                html,
                format!(
                    "{{% extends \"layout.html\" %}}{{% block body %}}{}{{% endblock %}}",
                    source.html
                ),
            )?;
        }
        Ok(Self { env })
    }

    /// Renders `kind` in `locale` with `context`.
    pub fn render(
        &self,
        kind: Kind,
        locale: Locale,
        context: &Value,
    ) -> Result<Rendered, minijinja::Error> {
        let [subject, text, html] = names(kind, locale);
        let context = minijinja::Value::from(Serde(context));
        let subject = self.env.get_template(&subject)?.render(&context)?;
        Ok(Rendered {
            // A header is one line whatever the template did.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.env.get_template(&text)?.render(&context)?,
            html: self.env.get_template(&html)?.render(&context)?,
            version: BUILTIN_VERSION,
        })
    }
}

struct Source {
    kind: Kind,
    locale: Locale,
    subject: &'static str,
    text: &'static str,
    html: &'static str,
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
    fn a_value_the_event_does_not_carry_is_an_error_not_a_blank() {
        let templates = Templates::builtin().unwrap();
        let context = json!({"shop": "Tienda", "lang": "en", "unsubscribe_url": null});
        let error = templates
            .render(Kind::Welcome, Locale::En, &context)
            .unwrap_err();
        assert_eq!(error.kind(), minijinja::ErrorKind::UndefinedError);
    }
}

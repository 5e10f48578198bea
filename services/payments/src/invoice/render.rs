//! An invoice as HTML (a minijinja template, escaped) and as PDF (one A4 page per 30 lines,
//! drawn with pdf-writer in the standard Helvetica, so no font file is embedded). Credit
//! notes print their amounts negative.

use minijinja::{Environment, Value, context};
use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
use tienda_events::money::Currency;

use super::{Invoice, Kind, Party};
use crate::domain::money::exponent;

/// `12.34 EUR`, `-5 JPY`: minor units at the currency's exponent.
pub fn money(minor: i64, currency: Currency) -> String {
    let exponent = exponent(currency).unwrap_or(2);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let scale = 10_u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale,
        width = exponent as usize
    )
}

/// The sign amounts are printed with.
fn sign(invoice: &Invoice) -> i64 {
    match invoice.kind() {
        Kind::Invoice => 1,
        Kind::CreditNote => -1,
    }
}

/// A rate in basis points as a percentage (`21 %`, `5.5 %`, `5.25 %`).
fn percent(bps: i32) -> String {
    let (whole, frac) = (bps / 100, bps % 100);
    if frac == 0 {
        format!("{whole} %")
    } else if frac % 10 == 0 {
        format!("{whole}.{} %", frac / 10)
    } else {
        format!("{whole}.{frac:02} %")
    }
}

const TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }} {{ number }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; margin-top: 1.5em; }
th, td { padding: .35em .5em; border-bottom: 1px solid #ddd; text-align: left; }
td.n, th.n { text-align: right; }
.parties { display: flex; justify-content: space-between; margin-top: 1.5em; }
.totals td { border: none; }
</style></head>
<body>
<h1>{{ title }} {{ number }}</h1>
<p>Issued {{ issued }}{% if credits %} · corrects invoice {{ credits }}{% endif %} · order {{ order_id }}</p>
<div class="parties">
<div><strong>{{ seller.name }}</strong>{% for l in seller.address %}<br>{{ l }}{% endfor %}{% if seller.country %}<br>{{ seller.country }}{% endif %}{% if seller.tax_id %}<br>Tax id {{ seller.tax_id }}{% endif %}</div>
<div><strong>Billed to</strong><br>{{ customer.name }}{% for l in customer.address %}<br>{{ l }}{% endfor %}{% if customer.country %}<br>{{ customer.country }}{% endif %}{% if customer.email %}<br>{{ customer.email }}{% endif %}</div>
</div>
<table>
<thead><tr><th>Description</th><th class="n">Qty</th><th class="n">Unit price</th><th class="n">Net</th><th class="n">Tax {{ rate }}</th><th class="n">Total</th></tr></thead>
<tbody>
{% for l in lines %}<tr><td>{{ l.description }}{% if l.sku %} <small>({{ l.sku }})</small>{% endif %}</td><td class="n">{{ l.quantity }}</td><td class="n">{{ l.unit_price }}</td><td class="n">{{ l.net }}</td><td class="n">{{ l.tax }}</td><td class="n">{{ l.total }}</td></tr>
{% endfor %}</tbody>
<tbody class="totals">
<tr><td colspan="5" class="n">Net</td><td class="n">{{ net }}</td></tr>
<tr><td colspan="5" class="n">Tax {{ rate }}</td><td class="n">{{ tax }}</td></tr>
<tr><td colspan="5" class="n"><strong>Total</strong></td><td class="n"><strong>{{ total }}</strong></td></tr>
</tbody>
</table>
</body>
</html>
"#;

/// A party for the template.
fn party_value(p: &Party) -> Value {
    context! {
        name => p.name.clone(),
        address => p.address.clone(),
        country => p.country.clone(),
        tax_id => p.tax_id.clone(),
        email => p.email.clone(),
    }
}

/// The invoice as an HTML page.
pub fn html(invoice: &Invoice) -> String {
    let mut env = Environment::new();
    // The `.html` name turns HTML escaping on: names and addresses come from customers.
    env.add_template("invoice.html", TEMPLATE)
        .expect("the template parses");
    let s = sign(invoice);
    let c = invoice.currency;
    let lines: Vec<_> = invoice
        .lines
        .iter()
        .map(|l| {
            context! {
                description => l.description.clone(),
                sku => l.sku.clone(),
                quantity => l.quantity,
                unit_price => money(s * l.unit_price, c),
                net => money(s * l.net, c),
                tax => money(s * l.tax, c),
                total => money(s * l.total, c),
            }
        })
        .collect();
    env.get_template("invoice.html")
        .expect("added above")
        .render(context! {
            title => invoice.kind().title(),
            number => invoice.number.clone(),
            issued => invoice.issued_at.format("%Y-%m-%d").to_string(),
            order_id => invoice.order_id.to_string(),
            credits => invoice.credits_number.clone(),
            seller => party_value(&invoice.seller.0),
            customer => party_value(&invoice.customer.0),
            rate => percent(invoice.tax_rate_bps),
            lines => lines,
            net => money(s * invoice.net, c),
            tax => money(s * invoice.tax, c),
            total => money(s * invoice.total, c),
        })
        .expect("the template renders")
}

/// Text in the standard fonts' WinAnsi encoding: Latin-1 as is, `€` and a few others mapped,
/// anything else as `?` (names in other scripts print as question marks in the PDF; the HTML
/// has them).
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '€' => 0x80,
            '‚' => 0x82,
            '„' => 0x84,
            '…' => 0x85,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '–' => 0x96,
            '—' => 0x97,
            c if (c as u32) < 0x80 || ((c as u32) >= 0xA0 && (c as u32) <= 0xFF) => c as u8,
            _ => b'?',
        })
        .collect()
}

/// Lines of the table per page.
const LINES_PER_PAGE: usize = 30;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

struct Page {
    content: Content,
}

impl Page {
    fn text(&mut self, font: Name<'_>, size: f32, x: f32, y: f32, text: &str) {
        let bytes = win_ansi(text);
        self.content
            .begin_text()
            .set_font(font, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    /// Right-aligned at `right`, with Helvetica's average width (numbers are what is aligned,
    /// and Helvetica's digits are all 0.556 em).
    fn text_right(&mut self, font: Name<'_>, size: f32, right: f32, y: f32, text: &str) {
        let width = text.chars().count() as f32 * 0.556 * size;
        self.text(font, size, right - width, y, text);
    }

    fn rule(&mut self, y: f32) {
        self.content
            .set_line_width(0.5)
            .move_to(50.0, y)
            .line_to(545.0, y)
            .stroke();
    }
}

fn party(page: &mut Page, x: f32, mut y: f32, heading: Option<&str>, p: &Party) {
    if let Some(h) = heading {
        page.text(BOLD, 9.0, x, y, h);
        y -= 12.0;
    }
    page.text(BOLD, 10.0, x, y, &p.name);
    for line in p
        .address
        .iter()
        .map(String::as_str)
        .chain(p.country.as_deref())
        .chain(p.email.as_deref())
    {
        y -= 12.0;
        page.text(REGULAR, 9.0, x, y, line);
    }
    if let Some(tax_id) = &p.tax_id {
        page.text(REGULAR, 9.0, x, y - 12.0, &format!("Tax id {tax_id}"));
    }
}

/// The invoice as a PDF document.
pub fn pdf(invoice: &Invoice) -> Vec<u8> {
    let s = sign(invoice);
    let c = invoice.currency;
    let chunks: Vec<_> = invoice.lines.chunks(LINES_PER_PAGE).collect();
    let pages = chunks.len().max(1);
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let page_ref = |i: usize| Ref::new(5 + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(6 + 2 * i as i32);

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages).map(page_ref))
        .count(pages as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));

    for i in 0..pages {
        let mut page = Page {
            content: Content::new(),
        };
        let title = format!("{} {}", invoice.kind().title(), invoice.number);
        page.text(BOLD, 18.0, 50.0, 790.0, &title);
        let mut issued = format!(
            "Issued {} · order {}",
            invoice.issued_at.format("%Y-%m-%d"),
            invoice.order_id
        );
        if let Some(number) = &invoice.credits_number {
            issued.push_str(&format!(" · corrects {number}"));
        }
        page.text(REGULAR, 9.0, 50.0, 772.0, &issued);
        if pages > 1 {
            page.text_right(REGULAR, 9.0, 545.0, 772.0, &format!("{}/{pages}", i + 1));
        }
        party(&mut page, 50.0, 740.0, None, &invoice.seller);
        party(
            &mut page,
            320.0,
            740.0,
            Some("Billed to"),
            &invoice.customer,
        );

        let mut y = 640.0;
        let rate = percent(invoice.tax_rate_bps);
        page.text(BOLD, 9.0, 50.0, y, "Description");
        page.text_right(BOLD, 9.0, 300.0, y, "Qty");
        page.text_right(BOLD, 9.0, 370.0, y, "Unit price");
        page.text_right(BOLD, 9.0, 430.0, y, "Net");
        page.text_right(BOLD, 9.0, 485.0, y, &format!("Tax {rate}"));
        page.text_right(BOLD, 9.0, 545.0, y, "Total");
        page.rule(y - 5.0);
        for l in chunks.get(i).copied().unwrap_or_default() {
            y -= 16.0;
            let mut description = l.description.clone();
            if description.chars().count() > 44 {
                description = description.chars().take(43).collect::<String>() + "…";
            }
            page.text(REGULAR, 9.0, 50.0, y, &description);
            page.text_right(REGULAR, 9.0, 300.0, y, &l.quantity.to_string());
            page.text_right(REGULAR, 8.0, 370.0, y, &money(s * l.unit_price, c));
            page.text_right(REGULAR, 8.0, 430.0, y, &money(s * l.net, c));
            page.text_right(REGULAR, 8.0, 485.0, y, &money(s * l.tax, c));
            page.text_right(REGULAR, 8.0, 545.0, y, &money(s * l.total, c));
        }
        if i + 1 == pages {
            page.rule(y - 8.0);
            for (label, amount, font) in [
                ("Net", invoice.net, REGULAR),
                (&*format!("Tax {rate}"), invoice.tax, REGULAR),
                ("Total", invoice.total, BOLD),
            ] {
                y -= 16.0;
                page.text_right(font, 9.0, 485.0, y - 8.0, label);
                page.text_right(font, 9.0, 545.0, y - 8.0, &money(s * amount, c));
            }
        }
        let mut writer = pdf.page(page_ref(i));
        writer
            .parent(tree)
            .media_box(Rect::new(0.0, 0.0, 595.0, 842.0))
            .contents(content_ref(i));
        let mut resources = writer.resources();
        resources.fonts().pair(REGULAR, regular).pair(BOLD, bold);
        drop(resources);
        drop(writer);
        pdf.stream(content_ref(i), &page.content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_at_their_currencys_exponent() {
        let eur = "EUR".parse().unwrap();
        assert_eq!(money(123_456, eur), "1234.56 EUR");
        assert_eq!(money(-5, eur), "-0.05 EUR");
        assert_eq!(money(1_234, "JPY".parse().unwrap()), "1234 JPY");
        assert_eq!(money(1_234, "KWD".parse().unwrap()), "1.234 KWD");
    }

    #[test]
    fn rates_print_as_percentages() {
        assert_eq!(percent(2_100), "21 %");
        assert_eq!(percent(550), "5.5 %");
        assert_eq!(percent(525), "5.25 %");
        assert_eq!(percent(0), "0 %");
    }

    #[test]
    fn text_is_encoded_for_the_standard_fonts() {
        assert_eq!(win_ansi("Señor 5 €"), b"Se\xf1or 5 \x80".to_vec());
        assert_eq!(win_ansi("東京"), b"??".to_vec());
    }
}

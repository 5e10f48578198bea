-- Catalog, inventory and reservations.

-- Provisioning creates it as the admin (the service's role may not); this is a no-op then.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- A tree: listing a category includes its subtree.
CREATE TABLE categories (
    id          uuid PRIMARY KEY,
    parent_id   uuid REFERENCES categories (id),
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX categories_parent ON categories (parent_id);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    status      text NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    images      text[] NOT NULL DEFAULT '{}',
    -- The lowest price among its live variants ("from ..."): price filters and sorts.
    min_price   bigint NOT NULL,
    currency    text NOT NULL,
    -- The ETag: one more per change.
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: orders keep pointing at it.
    deleted_at  timestamptz,
    -- Full text, name weighted over description.
    search      tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english'::regconfig, name), 'A') ||
                    setweight(to_tsvector('english'::regconfig, description), 'B')) STORED
);
CREATE INDEX products_search ON products USING gin (search);
CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
-- Listing: live products newest first (ids are UUIDv7, so id order is creation order), or by price.
CREATE INDEX products_listing ON products (status, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX products_by_price ON products (status, min_price, id) WHERE deleted_at IS NULL;

CREATE TABLE product_categories (
    product_id  uuid NOT NULL REFERENCES products (id),
    category_id uuid NOT NULL REFERENCES categories (id),
    PRIMARY KEY (product_id, category_id)
);
CREATE INDEX product_categories_category ON product_categories (category_id, product_id);

-- A sellable variant. SKUs are unique across the catalog and never reused: a variant dropped
-- from its product is marked removed, so orders still resolve it.
CREATE TABLE variants (
    sku          text PRIMARY KEY,
    product_id   uuid NOT NULL REFERENCES products (id),
    position     integer NOT NULL,
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb,
    price_amount bigint NOT NULL CHECK (price_amount >= 0),
    currency     text NOT NULL,
    removed_at   timestamptz
);
CREATE INDEX variants_product ON variants (product_id, position);
CREATE INDEX variants_attributes ON variants USING gin (attributes jsonb_path_ops);

-- Stock per SKU: sellable = on_hand - reserved, and the constraints make overselling
-- impossible whatever the code does.
CREATE TABLE inventory (
    sku                 text PRIMARY KEY REFERENCES variants (sku),
    on_hand             bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved            bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    low_stock_threshold bigint NOT NULL DEFAULT 5,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (reserved <= on_hand)
);

-- Every change of on_hand, and why.
CREATE TABLE stock_ledger (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku            text NOT NULL REFERENCES variants (sku),
    delta          bigint NOT NULL,
    on_hand_after  bigint NOT NULL,
    reason         text NOT NULL,
    actor          text,
    reservation_id uuid,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_ledger_sku ON stock_ledger (sku, id);

CREATE TABLE reservations (
    id          uuid PRIMARY KEY,
    order_id    uuid,
    status      text NOT NULL CHECK (status IN ('held', 'committed', 'released', 'expired')),
    -- The items as asked, canonical (sorted by SKU): a retry with other items is refused.
    items       jsonb NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    settled_at  timestamptz
);
CREATE INDEX reservations_expiry ON reservations (expires_at) WHERE status = 'held';

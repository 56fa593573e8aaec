-- The twelve enum types of the data model, with the seed's names and values
-- in the seed's order (the API's enums mirror them, plus _UNSPECIFIED = 0).

CREATE TYPE service_status AS ENUM ('healthy', 'degraded', 'down', 'unknown');

CREATE TYPE severity_level AS ENUM ('debug', 'info', 'warning', 'error', 'fatal', 'critical');

CREATE TYPE alert_status AS ENUM ('active', 'acknowledged', 'resolved', 'suppressed');

CREATE TYPE alert_rule_status AS ENUM ('enabled', 'disabled', 'testing');

CREATE TYPE error_status AS ENUM ('new', 'acknowledged', 'in-progress', 'resolved', 'ignored');

CREATE TYPE notification_channel AS ENUM ('email', 'slack', 'sms', 'webhook', 'pagerduty', 'in-app');

CREATE TYPE audit_action_type AS ENUM (
  'create', 'read', 'update', 'delete', 'execute', 'export', 'login', 'logout', 'access-denied'
);

CREATE TYPE metric_type AS ENUM ('counter', 'gauge', 'histogram', 'summary');

CREATE TYPE widget_type AS ENUM (
  'time-series', 'counter', 'gauge', 'table', 'pie-chart', 'bar-chart', 'heatmap', 'alert-list', 'custom-query'
);

CREATE TYPE integration_type AS ENUM (
  'payment-gateway', 'email-service', 'cloud-storage', 'auth-provider', 'analytics', 'erp-system',
  'sms-service', 'webhook'
);

CREATE TYPE dashboard_visibility AS ENUM ('private', 'team', 'organization', 'public');

CREATE TYPE comparison_operator AS ENUM (
  'gt',           -- greater than
  'gte',          -- greater than or equal
  'lt',           -- less than
  'lte',          -- less than or equal
  'eq',           -- equals
  'ne',           -- not equals
  'contains',
  'not-contains'
);

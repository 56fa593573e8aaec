/* Struct <-> JSON for the jsonb columns (see json.h). */
#include "common/json.h"

#include <math.h>
#include <stdint.h>

static json_t *struct_to_json(const Google__Protobuf__Struct *s, int depth, struct mon_error *err);

static json_t *value_to_json(const Google__Protobuf__Value *v, int depth, struct mon_error *err)
{
	if (v == NULL)
		return json_null();
	switch (v->kind_case) {
	case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
		if (!isfinite(v->number_value)) {
			mon_error_set(err, MON_EINVAL, "numbers must be finite");
			return NULL;
		}
		if (v->number_value > -9007199254740992.0 && v->number_value < 9007199254740992.0 &&
		    (double)(int64_t)v->number_value == v->number_value)
			return json_integer((json_int_t)v->number_value);
		return json_real(v->number_value);
	case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return json_string(v->string_value ? v->string_value : "");
	case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE: return json_boolean(v->bool_value);
	case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE: return struct_to_json(v->struct_value, depth + 1, err);
	case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
		if (depth + 1 > SVC_JSON_DEPTH_MAX) {
			mon_error_set(err, MON_EINVAL, "nested deeper than %d", SVC_JSON_DEPTH_MAX);
			return NULL;
		}
		json_t *arr = json_array();
		for (size_t i = 0; arr != NULL && v->list_value != NULL && i < v->list_value->n_values; i++) {
			json_t *item = value_to_json(v->list_value->values[i], depth + 1, err);
			if (item == NULL || json_array_append_new(arr, item) != 0) {
				json_decref(arr);
				return NULL;
			}
		}
		return arr;
	}
	default: return json_null();
	}
}

static json_t *struct_to_json(const Google__Protobuf__Struct *s, int depth, struct mon_error *err)
{
	if (depth > SVC_JSON_DEPTH_MAX) {
		mon_error_set(err, MON_EINVAL, "nested deeper than %d", SVC_JSON_DEPTH_MAX);
		return NULL;
	}
	json_t *obj = json_object();
	for (size_t i = 0; obj != NULL && s != NULL && i < s->n_fields; i++) {
		json_t *item = value_to_json(s->fields[i]->value, depth, err);
		if (item == NULL || json_object_set_new(obj, s->fields[i]->key ? s->fields[i]->key : "", item) != 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

json_t *svc_struct_to_json(const Google__Protobuf__Struct *s, struct mon_error *err)
{
	json_t *obj = struct_to_json(s, 1, err);
	if (obj == NULL && err->code == 0)
		mon_error_set(err, MON_ENOMEM, "out of memory");
	return obj;
}

static Google__Protobuf__Struct *json_to_struct(struct arena *a, const json_t *obj, int depth);

static Google__Protobuf__Value *json_to_value(struct arena *a, const json_t *j, int depth)
{
	Google__Protobuf__Value *v = arena_alloc(a, sizeof(*v));
	if (v == NULL || depth > SVC_JSON_DEPTH_MAX)
		return NULL;
	google__protobuf__value__init(v);
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
		v->struct_value = json_to_struct(a, j, depth + 1);
		return v->struct_value ? v : NULL;
	case JSON_ARRAY: {
		Google__Protobuf__ListValue *l = arena_alloc(a, sizeof(*l));
		if (l == NULL)
			return NULL;
		google__protobuf__list_value__init(l);
		size_t n = json_array_size(j);
		l->values = n ? arena_calloc(a, n, sizeof(*l->values)) : NULL;
		if (n && l->values == NULL)
			return NULL;
		for (size_t i = 0; i < n; i++)
			if ((l->values[i] = json_to_value(a, json_array_get(j, i), depth + 1)) == NULL)
				return NULL;
		l->n_values = n;
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
		v->list_value = l;
		return v;
	}
	case JSON_STRING:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		v->string_value = arena_strdup(a, json_string_value(j));
		return v->string_value ? v : NULL;
	case JSON_INTEGER:
	case JSON_REAL:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
		v->number_value = json_number_value(j);
		return v;
	case JSON_TRUE:
	case JSON_FALSE:
		v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
		v->bool_value = json_is_true(j);
		return v;
	default: v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE; return v;
	}
}

static Google__Protobuf__Struct *json_to_struct(struct arena *a, const json_t *obj, int depth)
{
	Google__Protobuf__Struct *s = arena_alloc(a, sizeof(*s));
	if (s == NULL || depth > SVC_JSON_DEPTH_MAX)
		return NULL;
	google__protobuf__struct__init(s);
	size_t n = json_object_size(obj), i = 0;
	s->fields = n ? arena_calloc(a, n, sizeof(*s->fields)) : NULL;
	if (n && s->fields == NULL)
		return NULL;
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)obj, key, value)
	{
		Google__Protobuf__Struct__FieldsEntry *e = arena_alloc(a, sizeof(*e));
		if (e == NULL)
			return NULL;
		google__protobuf__struct__fields_entry__init(e);
		e->key = arena_strdup(a, key);
		e->value = json_to_value(a, value, depth);
		if (e->key == NULL || e->value == NULL)
			return NULL;
		s->fields[i++] = e;
	}
	s->n_fields = i;
	return s;
}

Google__Protobuf__Struct *svc_struct_from_json(struct arena *a, const json_t *obj)
{
	return json_to_struct(a, obj, 1);
}

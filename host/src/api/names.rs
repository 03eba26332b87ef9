//! The OpenAPI schema of the model's enums: a string that is one of the
//! enum's own names, taken from the same derived mapping the store and the
//! CLI use, so the document lists exactly what the API sends and accepts.

use strum::VariantNames;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// `T`'s names as a string schema with their values listed.
pub fn schema<T: VariantNames>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(T::VARIANTS.iter().copied()))
        .build()
}

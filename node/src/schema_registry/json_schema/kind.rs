//! The kinds of difference between an original (older) and an updated JSON Schema, by
//! Confluent's names (its `Difference.Type`), each with its verdict for BACKWARD
//! compatibility under Confluent's default (STRICT) policy: whether a reader of the
//! updated schema still accepts what the original accepted. FORWARD asks the same with
//! the two schemas swapped.

macro_rules! kinds {
    ($($name:ident: $compatible:expr,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)] // Confluent's names, as its messages spell them
        pub enum Kind {
            $($name,)*
        }

        impl Kind {
            /// Allowed under BACKWARD compatibility.
            pub fn compatible(self) -> bool {
                match self {
                    $(Kind::$name => $compatible,)*
                }
            }
        }
    };
}

kinds! {
    SCHEMA_ADDED: false,
    SCHEMA_REMOVED: true,
    TYPE_EXTENDED: true,
    TYPE_NARROWED: false,
    TYPE_CHANGED: false,

    MAX_LENGTH_ADDED: false,
    MAX_LENGTH_REMOVED: true,
    MAX_LENGTH_INCREASED: true,
    MAX_LENGTH_DECREASED: false,
    MIN_LENGTH_ADDED: false,
    MIN_LENGTH_REMOVED: true,
    MIN_LENGTH_INCREASED: false,
    MIN_LENGTH_DECREASED: true,
    PATTERN_ADDED: false,
    PATTERN_REMOVED: true,
    PATTERN_CHANGED: false,

    MAXIMUM_ADDED: false,
    MAXIMUM_REMOVED: true,
    MAXIMUM_INCREASED: true,
    MAXIMUM_DECREASED: false,
    MINIMUM_ADDED: false,
    MINIMUM_REMOVED: true,
    MINIMUM_INCREASED: false,
    MINIMUM_DECREASED: true,
    EXCLUSIVE_MAXIMUM_ADDED: false,
    EXCLUSIVE_MAXIMUM_REMOVED: true,
    EXCLUSIVE_MAXIMUM_INCREASED: true,
    EXCLUSIVE_MAXIMUM_DECREASED: false,
    EXCLUSIVE_MINIMUM_ADDED: false,
    EXCLUSIVE_MINIMUM_REMOVED: true,
    EXCLUSIVE_MINIMUM_INCREASED: false,
    EXCLUSIVE_MINIMUM_DECREASED: true,
    MULTIPLE_OF_ADDED: false,
    MULTIPLE_OF_REMOVED: true,
    MULTIPLE_OF_EXPANDED: false,
    MULTIPLE_OF_REDUCED: true,
    MULTIPLE_OF_CHANGED: false,

    REQUIRED_ATTRIBUTE_ADDED: false,
    REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED: true,
    REQUIRED_ATTRIBUTE_REMOVED: true,
    MAX_PROPERTIES_ADDED: false,
    MAX_PROPERTIES_REMOVED: true,
    MAX_PROPERTIES_INCREASED: true,
    MAX_PROPERTIES_DECREASED: false,
    MIN_PROPERTIES_ADDED: false,
    MIN_PROPERTIES_REMOVED: true,
    MIN_PROPERTIES_INCREASED: false,
    MIN_PROPERTIES_DECREASED: true,
    ADDITIONAL_PROPERTIES_ADDED: true,
    ADDITIONAL_PROPERTIES_REMOVED: false,
    ADDITIONAL_PROPERTIES_EXTENDED: true,
    ADDITIONAL_PROPERTIES_NARROWED: false,
    UNEVALUATED_PROPERTIES_ADDED: true,
    UNEVALUATED_PROPERTIES_REMOVED: false,
    UNEVALUATED_PROPERTIES_EXTENDED: true,
    UNEVALUATED_PROPERTIES_NARROWED: false,
    DEPENDENCY_ARRAY_ADDED: false,
    DEPENDENCY_ARRAY_REMOVED: true,
    DEPENDENCY_ARRAY_EXTENDED: false,
    DEPENDENCY_ARRAY_NARROWED: true,
    DEPENDENCY_ARRAY_CHANGED: false,
    DEPENDENCY_SCHEMA_ADDED: false,
    DEPENDENCY_SCHEMA_REMOVED: true,

    // Under Confluent's LENIENT policy the two "added to open content model" kinds
    // below are compatible too; Spate applies the default, STRICT.
    REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL: false,
    REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL: false,
    OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL: false,
    PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL: true,
    REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL: false,
    REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL: true,
    OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL: true,
    PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL: true,
    PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL: true,
    PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL: false,
    PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: true,
    PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: false,
    PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: true,
    PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: false,

    MAX_ITEMS_ADDED: false,
    MAX_ITEMS_REMOVED: true,
    MAX_ITEMS_INCREASED: true,
    MAX_ITEMS_DECREASED: false,
    MIN_ITEMS_ADDED: false,
    MIN_ITEMS_REMOVED: true,
    MIN_ITEMS_INCREASED: false,
    MIN_ITEMS_DECREASED: true,
    MAX_CONTAINS_ADDED: false,
    MAX_CONTAINS_REMOVED: true,
    MAX_CONTAINS_INCREASED: true,
    MAX_CONTAINS_DECREASED: false,
    MIN_CONTAINS_ADDED: false,
    MIN_CONTAINS_REMOVED: true,
    MIN_CONTAINS_INCREASED: false,
    MIN_CONTAINS_DECREASED: true,
    UNIQUE_ITEMS_ADDED: false,
    UNIQUE_ITEMS_REMOVED: true,
    ADDITIONAL_ITEMS_ADDED: true,
    ADDITIONAL_ITEMS_REMOVED: false,
    ADDITIONAL_ITEMS_EXTENDED: true,
    ADDITIONAL_ITEMS_NARROWED: false,
    UNEVALUATED_ITEMS_ADDED: true,
    UNEVALUATED_ITEMS_REMOVED: false,
    UNEVALUATED_ITEMS_EXTENDED: true,
    UNEVALUATED_ITEMS_NARROWED: false,
    ITEM_ADDED_TO_OPEN_CONTENT_MODEL: false,
    ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL: true,
    ITEM_ADDED_TO_CLOSED_CONTENT_MODEL: true,
    ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL: true,
    ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL: true,
    ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL: false,
    ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: true,
    ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: false,
    ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: true,
    ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL: false,

    ENUM_ARRAY_EXTENDED: true,
    ENUM_ARRAY_NARROWED: false,
    ENUM_ARRAY_CHANGED: false,

    COMBINED_TYPE_EXTENDED: true,
    COMBINED_TYPE_CHANGED: false,
    PRODUCT_TYPE_EXTENDED: false,
    PRODUCT_TYPE_NARROWED: true,
    SUM_TYPE_EXTENDED: true,
    SUM_TYPE_NARROWED: false,
    COMBINED_TYPE_SUBSCHEMAS_CHANGED: false,
    NOT_TYPE_EXTENDED: false,
    NOT_TYPE_NARROWED: true,

    // Not Confluent's: the comparison went past Spate's bounds (nesting, work), so it
    // cannot show the schemas compatible.
    ANALYSIS_LIMIT_REACHED: false,
}

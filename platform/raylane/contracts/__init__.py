"""Event contracts: Avro schemas, the schema registry and the Confluent wire-format codec.

The platform's contracts live as ``schemas/<contract>.avsc``; the committed file registry
in ``registry/`` holds their subjects (``<contract>-value``), versions and global ids. A
project's own contracts live in its ``contracts/`` folder (:class:`ProjectContracts`),
whose registry starts as a copy of the built-in one.
A :class:`Codec` encodes and decodes one subject's events; every failure is a typed
:class:`raylane.errors.ContractError` subclass, so bad input goes to the DLQ.

Backends: :class:`FileSchemaRegistry` (default) or a Confluent REST registry, picked by
:func:`open_registry` from a pipeline's ``schema_registry`` config. Compatibility per
subject is computed by the ``avro`` checker (:func:`check_compatibility`);
:func:`check_schemas` / :func:`register_checked` are the gate behind ``raylane schema
check|register``. Consumers declare the fields they read (``consumers/*.yaml``,
:func:`check_declarations`). See docs/contracts.md.

Example::

    codec = Codec.for_contract("payments.initiated", formats=("avro", "json"))
    raw = codec.encode(event)          # b"\\x00" + schema id + Avro body
    oks, errs = codec.decode_batch([raw, b"garbage"])
"""

from raylane.contracts._builtin import (
    SCHEMAS_DIR,
    contract_names,
    load_contract,
    register_contracts,
    subject_for,
)
from raylane.contracts._codec import (
    DEFAULT_MAX_EVENT_BYTES,
    MAGIC_BYTE,
    Codec,
    schema_id_of,
    wire_header,
)
from raylane.contracts._compat import (
    COMPATIBILITY_LEVELS,
    DEFAULT_COMPATIBILITY,
    Compatibility,
    CompatibilityIssue,
    IncompatibleSchema,
    check_compatibility,
    format_issues,
)
from raylane.contracts._consumers import (
    CONSUMERS_DIR,
    ConsumerDeclaration,
    DeclarationViolation,
    all_declarations,
    check_declarations,
    load_declarations,
    pipeline_reads,
)
from raylane.contracts._errors import (
    BadMagicByte,
    ContractViolation,
    CorruptEvent,
    EmptyEvent,
    EventTimeOutOfRange,
    EventTooLarge,
    InvalidJson,
    InvalidSchema,
    LimitExceeded,
    MissingField,
    NonFiniteNumber,
    SchemaMismatch,
    SchemaNotFound,
    SchemaRegistryError,
    TrailingBytes,
    TruncatedEvent,
    UnknownSchemaId,
    UnsupportedFormat,
    WrongType,
)
from raylane.contracts._gate import (
    SubjectCheck,
    check_schema,
    check_schemas,
    history,
    register_checked,
)
from raylane.contracts._open import open_registry
from raylane.contracts._project import DEFAULT_CONTRACTS_DIR, ProjectContracts, contract_sources
from raylane.contracts._registry import (
    BUILTIN_REGISTRY_DIR,
    FileSchemaRegistry,
    RegisteredSchema,
    SchemaRegistry,
)
from raylane.errors import ContractError

__all__ = [
    "BUILTIN_REGISTRY_DIR",
    "COMPATIBILITY_LEVELS",
    "CONSUMERS_DIR",
    "DEFAULT_COMPATIBILITY",
    "DEFAULT_CONTRACTS_DIR",
    "DEFAULT_MAX_EVENT_BYTES",
    "MAGIC_BYTE",
    "SCHEMAS_DIR",
    "BadMagicByte",
    "Codec",
    "Compatibility",
    "CompatibilityIssue",
    "ConsumerDeclaration",
    "ContractError",
    "ContractViolation",
    "CorruptEvent",
    "DeclarationViolation",
    "EmptyEvent",
    "EventTimeOutOfRange",
    "EventTooLarge",
    "FileSchemaRegistry",
    "IncompatibleSchema",
    "InvalidJson",
    "InvalidSchema",
    "LimitExceeded",
    "MissingField",
    "NonFiniteNumber",
    "ProjectContracts",
    "RegisteredSchema",
    "SchemaMismatch",
    "SchemaNotFound",
    "SchemaRegistry",
    "SchemaRegistryError",
    "SubjectCheck",
    "TrailingBytes",
    "TruncatedEvent",
    "UnknownSchemaId",
    "UnsupportedFormat",
    "WrongType",
    "all_declarations",
    "check_compatibility",
    "check_declarations",
    "check_schema",
    "check_schemas",
    "contract_names",
    "contract_sources",
    "format_issues",
    "history",
    "load_contract",
    "load_declarations",
    "open_registry",
    "pipeline_reads",
    "register_checked",
    "register_contracts",
    "schema_id_of",
    "subject_for",
    "wire_header",
]

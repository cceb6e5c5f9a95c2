"""The mock's JSON-schema instances: valid (checked by jsonschema, formats included) and the same every time."""

from __future__ import annotations

import datetime
import uuid
from enum import Enum
from typing import Annotated, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from providers.mock_schema import instance_of

FORMATS = jsonschema.FormatChecker()


class Colour(Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str
    postcode: Annotated[str, Field(pattern=r"^\d{5}(-\d{4})?$")]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", min_length=2, max_length=2)]


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Node(BaseModel):
    name: str
    children: list[Node]  # required and recursive: the generator must stop


class Person(BaseModel):
    name: str
    age: int = Field(gt=17, lt=150)
    height: float = Field(multiple_of=0.25, ge=1.3)
    colour: Colour
    nickname: str | None = None
    address: Address | None  # Optional and required: anyOf with null, no default
    previous: list[Address] = Field(min_length=2, max_length=3)
    pet: Cat | Dog = Field(discriminator="kind")
    born: datetime.date
    seen: datetime.datetime
    id: uuid.UUID
    scores: dict[str, int]
    tree: Node
    pair: tuple[int, str]


def valid(schema, cls=jsonschema.Draft202012Validator):
    value = instance_of(schema)
    cls(schema, format_checker=FORMATS).validate(value)
    return value


def test_a_pydantic_model_with_defs_optionals_unions_and_recursion():
    schema = Person.model_json_schema()
    assert "$defs" in schema
    value = valid(schema)
    person = Person.model_validate(value)
    assert person.address is not None and person.address.postcode.isdigit()  # the non-null branch when there is no default
    assert person.nickname is None  # the default where there is one
    assert len(person.previous) == 2 and person.age == 18 and person.height == 1.5


def test_openai_strict_tool_parameters():
    """The openai SDK's strict schema: every property required, additionalProperties false, defaults dropped."""
    parameters = openai.pydantic_function_tool(Person)["function"]["parameters"]
    Person.model_validate(valid(parameters))


TRICKY = {
    "type list with null": {"type": ["null", "integer"], "minimum": 3},
    "allOf merged": {
        "allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, {"properties": {"b": {"const": 2}}, "required": ["b"]}]
    },
    "oneOf first non-null": {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "boolean"}, "minItems": 1}]},
    "required without a property schema": {"type": "object", "required": ["x"], "additionalProperties": False, "properties": {"x": True}},
    "definitions pointer": {"definitions": {"a/b": {"type": "number", "exclusiveMinimum": 5}}, "$ref": "#/definitions/a~1b"},
    "linked list": {
        "type": "object",
        "properties": {"value": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
        "required": ["value", "next"],
    },
    "prefixItems": {"type": "array", "prefixItems": [{"type": "integer"}, {"enum": ["x", "y"]}], "items": False},
    "bounded string": {"type": "string", "minLength": 9, "maxLength": 9},
    "bounded integer": {"type": "integer", "minimum": -10, "maximum": -5, "multipleOf": 3},
    "pattern with classes": {"type": "string", "pattern": r"^[^a-z0-9]{3}-\w+@(foo|bar)\.example$"},
    "no type, just properties": {"properties": {"n": {"type": "integer"}}},
    "empty": {},
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_schemas(name):
    valid(TRICKY[name])


def test_a_schema_no_finite_value_fits_still_gets_an_answer():
    """``next`` is required and must be another such object: no instance exists, but the generator must end."""
    value = instance_of({"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]})
    assert isinstance(value, dict)


def test_a_draft4_boolean_exclusive_minimum():
    value = valid({"type": "integer", "minimum": 0, "exclusiveMinimum": True}, jsonschema.Draft4Validator)
    assert value == 1


def test_the_same_schema_gets_the_same_instance():
    schema = Person.model_json_schema()
    assert instance_of(schema) == instance_of(schema)

"""REST API plumbing every app's endpoints share: the error body they all document, and the
JSON parser every endpoint reads bodies with.

The JSON parser is bounded in nesting: Python's json recurses once per level, and so does
every walk over the result (DRF's field validation among them), so a body of
``[[[[...]]]]`` a thousand levels deep made a 500. No request body of this API nests
deeper than a few levels.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from catalog.ingest.readers import nesting_depth


# Errors: the schema only; the body is built by search.api.api_exception_handler.
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable, e.g. 'not_found'")
    message = serializers.CharField(help_text="What went wrong, for a person")
    details = serializers.DictField(
        child=serializers.JSONField(), help_text="Per-field errors or extra facts"
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


#: Deeper than any body the API accepts (a product's attributes, an import's mapping).
MAX_JSON_NESTING = 32


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        if nesting_depth(data, limit=MAX_JSON_NESTING) > MAX_JSON_NESTING:
            raise ParseError(
                f"JSON parse error - the body is nested more than {MAX_JSON_NESTING} levels deep."
            )
        return data

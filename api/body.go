package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// checkDepth reports an error when the JSON text b nests arrays and
// objects deeper than max. It only counts brackets outside strings, so it
// runs in one pass and constant memory whatever b holds; b's validity is
// left to the decoder.
func checkDepth(b []byte, max int) error {
	depth, inString, escaped := 0, false, false
	for i, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				return fmt.Errorf("JSON nested deeper than %d levels (at byte %d)", max, i)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// decodeStrict decodes b, one JSON value, into v: nesting checked first,
// unknown fields and trailing data refused.
func decodeStrict(b []byte, v any, maxDepth int) error {
	if err := checkDepth(b, maxDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body; a JSON object is expected")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

"""X12 in and out: 837P intake, 999/277CA acknowledgements, 835 remittance, FHIR ClaimResponse.

Modules: `parse837` (837P -> contract lines), `ack999`, `ack277ca`, `remit835`, `fhir`,
`validate` (pyx12 as the TR3 gate), `x12` (tokenizer and writer), `cli` (the `x12` typer app).
"""

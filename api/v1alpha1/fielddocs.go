package v1alpha1

//go:generate go test -run TestGeneratedFieldDocs -update .

// FieldDoc returns the doc comment of a field of one of this package's
// types, by the Go names of the type and the field ("VirtualMachineSpec",
// "Host"), or of the type itself with field "". The comments are read
// from the source by `go generate` into zz_generated_fielddocs.go, so the
// OpenAPI document (and `hearth explain`) describe fields with the words
// their Go declarations use; a test fails when that file is stale.
func FieldDoc(typeName, field string) string {
	if field == "" {
		return fieldDocs[typeName]
	}
	return fieldDocs[typeName+"."+field]
}

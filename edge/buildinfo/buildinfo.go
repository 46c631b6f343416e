// Package buildinfo names the product and version this binary was built as.
package buildinfo

// Version of edged, classterm and cityhub. Firmware bundles carry their own
// version in their signed manifest; this is what the running code reports.
const Version = "0.1.0"

// Product is the firmware product name.
const Product = "campusedge"

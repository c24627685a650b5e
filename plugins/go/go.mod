module wit_component

go 1.27.1

require go.bytecodealliance.org/pkg v0.4.0

// The package's source ships inside the wit-bindgen-go crate that generated the bindings;
// build.sh links .go-pkg to it, so the build needs no Go module proxy.
replace go.bytecodealliance.org/pkg => ./.go-pkg

// One import for a Swift tool that runs models: the spec (`MMoECore`), the runtime
// (`MMoERuntime`: `Model`, `predict`, `rank`, gate analysis) and the native file format
// (`MMoEFormat`: `Model.open(path:)`, `ModelFileWriter`). It never links libhdf5.
@_exported import MMoECore
@_exported import MMoEFormat
@_exported import MMoERuntime

"""The HTTP and GraphQL surface: Starlette app, Strawberry schema and extensions, context, server."""

"""analytics-gql: a GraphQL analytics server for blog platforms."""

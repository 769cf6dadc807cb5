using Bursar.Testing;

namespace Bursar.Gateway.Tests;

/// <summary>A real PostgreSQL server (<see cref="LocalPostgres"/>) for the life of one test class; each test takes a fresh database.</summary>
public sealed class PostgresServer : LocalPostgres, IAsyncLifetime
{
    public Task InitializeAsync() => StartAsync();

    public Task DisposeAsync() => StopAsync();
}

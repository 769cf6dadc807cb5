using System.Net.Http.Headers;
using System.Text;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Simulator;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>A real gateway on a loopback port, backed by the in-process Simulator and a fresh SQLite file.</summary>
public class GatewayFixture : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-gw-" + Guid.NewGuid().ToString("N"));
    private WebApplication? _app;

    public const string AdminKey = "admin-test-key";
    public string BaseUrl { get; private set; } = "";
    public string Key { get; private set; } = "";
    public HttpClient Http { get; private set; } = null!;
    /// <summary>The store the gateway uses (SQLite unless the fixture's configuration says <c>Bursar:Store=postgres</c>).</summary>
    public Bursar.Core.Storage.IBursarStore Store => _app!.Services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
    public ProviderSimulator Simulator => _app!.Services.GetRequiredService<ProviderSimulator>();
    public IServiceProvider Services => _app!.Services;

    /// <summary>Extra configuration for a fixture subclass.</summary>
    protected virtual IEnumerable<string> ExtraArgs => [];

    public async Task InitializeAsync()
    {
        _app = GatewayHost.Build(
            ["--urls=http://127.0.0.1:0", $"--Bursar:DataDirectory={_dir}", "--Bursar:MaxRequestBodyBytes=1048576", "--Bursar:Providers:BaseRetryDelay=00:00:00.010",
             // ready at once: the warm-up's calls through the request path have their own tests (WarmupTests)
             "--Bursar:Server:WarmUpTime=0",
             $"--Bursar:AdminKey={AdminKey}", "--Bursar:Runs:MaxTurns=4", "--Bursar:Runs:DoneWhenAnsweredWithoutTools=true",
             "--Bursar:Prices:0:Model=gpt-local-free", "--Bursar:Prices:0:Provider=local", "--Bursar:Prices:0:Input=0", "--Bursar:Prices:0:Output=0",
             "--Bursar:ResponseCache:TtlByFeature:cache-off=00:00:00", "--Bursar:PromptCache:MoveVolatileToEnd:0=volatile-moved",
             "--Bursar:SemanticCache:Features:0=semantic-faq", "--Bursar:SemanticCache:Threshold=0.8",
             // models the simulated deployments offer although no price is known for them (the unpriced-model tests)
             "--Bursar:Simulator:Models:0=gpt-unpriced-x", "--Bursar:Simulator:Models:1=gpt-9-preview", .. ExtraArgs],
            b => b.Logging.SetMinimumLevel(LogLevel.Warning));
        await _app.StartAsync();
        BaseUrl = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Key = await CreateKeyAsync(team: null);
        Http = new HttpClient { BaseAddress = new Uri(BaseUrl) };
    }

    public async Task<string> CreateKeyAsync(string? team, string? customer = null, string? downgradeModel = null, string? unpricedPolicy = null, string[]? allowedCustomers = null)
    {
        var (key, secret) = KeyFactory.Create(TimeProvider.System, team: team, customer: customer, downgradeModel: downgradeModel, unpricedPolicy: unpricedPolicy, allowedCustomers: allowedCustomers);
        await Store.AddAsync(key, default);
        return secret;
    }

    public async Task<string> KeyIdAsync(string secret) => (await Store.ListAsync(default)).Single(k => k.Hash == VirtualKey.HashSecret(secret)).Id;

    /// <summary>Calls the admin API.</summary>
    public async Task<(System.Net.HttpStatusCode Status, System.Text.Json.Nodes.JsonNode? Body)> AdminAsync(HttpMethod method, string path, object? body = null, string? adminKey = AdminKey)
    {
        using var req = new HttpRequestMessage(method, path);
        if (adminKey is not null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminKey);
        if (body is not null) req.Content = new StringContent(System.Text.Json.JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
        using var resp = await Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? null : System.Text.Json.Nodes.JsonNode.Parse(text));
    }

    public HttpRequestMessage Post(string path, string json, string? key = null, string? feature = null)
    {
        var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key ?? Key);
        if (feature is not null) req.Headers.Add("x-bursar-feature", feature);
        return req;
    }

    /// <summary>Waits until the ledger holds <paramref name="count"/> records for <paramref name="feature"/> (written off the request path).</summary>
    public async Task<IReadOnlyList<LedgerRecord>> LedgerAsync(string feature, int count = 1)
    {
        IReadOnlyList<LedgerRecord> rows = [];
        for (var i = 0; i < 200; i++)
        {
            rows = (await Store.ReadAsync(new LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Feature == feature).ToArray();
            if (rows.Count >= count) return rows;
            await Task.Delay(25);
        }
        throw new Xunit.Sdk.XunitException($"expected {count} ledger records for feature '{feature}', found {rows.Count}");
    }

    public async Task DisposeAsync()
    {
        Http?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}

[CollectionDefinition(Name)]
public sealed class GatewayCollection : ICollectionFixture<GatewayFixture>
{
    public const string Name = "gateway";
}

using Bursar.Gateway.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The host reads its appsettings files once. Reload-on-change watches the content root recursively, and the default data
/// folder (.bursar) sits under it, so with it on every ledger write (SQLite WAL, the journal) woke a file-watcher thread.
/// </summary>
public sealed class ConfigurationReloadTests
{
    private static async Task<bool[]> JsonSourcesReload(params string[] extra)
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-reload-" + Guid.NewGuid().ToString("N"));
        try
        {
            await using var app = GatewayHost.Build(["--urls=http://127.0.0.1:0", "--Bursar:DataDirectory=" + dir, .. extra]);
            var root = (IConfigurationRoot)app.Services.GetRequiredService<IConfiguration>();
            return root.Providers.OfType<JsonConfigurationProvider>().Select(p => p.Source.ReloadOnChange).ToArray();
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task The_appsettings_files_are_not_watched_by_default()
    {
        var sources = await JsonSourcesReload();
        Assert.NotEmpty(sources); // appsettings.json and appsettings.{Environment}.json are still read
        Assert.All(sources, Assert.False);
    }

    [Fact]
    public async Task An_operator_can_turn_reload_on_change_back_on()
    {
        var sources = await JsonSourcesReload("--hostBuilder:reloadConfigOnChange=true");
        Assert.NotEmpty(sources);
        Assert.All(sources, Assert.True);
    }
}

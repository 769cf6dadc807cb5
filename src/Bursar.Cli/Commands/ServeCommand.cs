using Bursar.Hosting;
using System.CommandLine;
using Microsoft.Extensions.Hosting;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Cli.Commands;

internal static class ServeCommand
{
    public static readonly Option<string> Urls = new("--urls") { Description = "Addresses to listen on, e.g. http://127.0.0.1:8080 or http://0.0.0.0:8080;http://[::]:8080", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
    public static readonly Option<int?> Port = new("--port") { Description = "Listen on http://127.0.0.1:<port> (shorthand for --urls)" };

    /// <summary>The addresses from --port or --urls.</summary>
    public static string Addresses(ParseResult pr, Option<int?> port, Option<string> urls)
    {
        if (pr.GetValue(port) is not { } p) return pr.GetValue(urls)!;
        if (p is < 1 or > 65535) throw new CliException($"--port must be 1-65535, not {p}.");
        return $"http://127.0.0.1:{p}";
    }

    /// <summary>One banner line per deployment: name, dialect, base URL, models, and whether the Simulator stands in for it.</summary>
    internal static string DeploymentLine(UpstreamDeployment d) =>
        $"  {Bursar.Core.Reporting.TerminalText.Escape(d.Name),-12} {d.Dialect.ToString().ToLowerInvariant(),-9} {Bursar.Core.Reporting.TerminalText.Escape(d.BaseUri.ToString()),-32} models: {Bursar.Core.Reporting.TerminalText.Escape(string.Join(' ', d.Options.Models))}"
        + (d.Simulated ? "  (SIMULATOR: no API key configured)" : "");

    public static Command Create()
    {
        var cmd = new Command("serve", "Run the gateway (OpenAI and Anthropic wire formats). Deployments without a provider key are served by the built-in Simulator.");
        cmd.Options.Add(Urls);
        cmd.Options.Add(Port);
        cmd.TreatUnmatchedTokensAsErrors = false; // configuration overrides (--Bursar:Section:Key=value) pass through; anything else is refused
        cmd.SetAction(async (pr, ct) =>
        {
            var urls = Addresses(pr, Port, Urls);
            var app = GatewayHost.Build(CliOptions.HostArgs(pr, urls, CliOptions.ConfigurationOverrides(pr.UnmatchedTokens)), b => CliOptions.QuietHost(b, null));
            await app.StartAsync(ct); // a busy port or a bad configuration value stops here, before the banner
            var registry = app.Services.GetRequiredService<UpstreamRegistry>();
            Console.WriteLine($"Bursar gateway on {urls}  (data: {Path.GetFullPath(pr.GetValue(CliOptions.DataDir)!)})  Ctrl+C or SIGTERM stops it gracefully");
            foreach (var d in registry.Deployments)
                Console.WriteLine(DeploymentLine(d));
            Console.WriteLine("  OpenAI SDK:    base_url = <url>/v1      Anthropic SDK: base_url = <url>      key: a Bursar virtual key (bursar keys create)");
            var table = app.Services.GetRequiredService<Bursar.Core.Routing.RouteTable>();
            var stored = (await app.Services.GetRequiredService<Bursar.Core.Routing.IRouteStore>().ListRoutesAsync(CancellationToken.None)).Select(r => r.Name).ToArray();
            var configured = table.Configured.Routes.Select(r => r.Name).ToArray();
            static string Names(string[] n) => string.Join(", ", n.Take(6)) + (n.Length > 6 ? ", ..." : "");
            Console.WriteLine(stored.Length + configured.Length == 0
                ? "  routes: none (every call is served as asked; see Bursar:Routing:Routes, DefaultTierRoutes, bursar routes)"
                : $"  routes: {stored.Length} stored{(stored.Length > 0 ? $" ({Names(stored)})" : "")}, tried first; {configured.Length} from configuration{(configured.Length > 0 ? $" ({Names(configured)})" : "")}");
            var admin = app.Services.GetRequiredService<BursarOptions>().AdminKey;
            Console.WriteLine(string.IsNullOrEmpty(admin)
                ? "  dashboard and admin API: off (set Bursar:AdminKey);  metrics: <url>/metrics"
                : "  dashboard: <url>/dashboard   admin API: <url>/admin (Bursar:AdminKey; OpenAPI document: <url>/openapi/v1.json)   metrics: <url>/metrics");
            await app.WaitForShutdownAsync(CancellationToken.None); // SIGINT / SIGTERM: the host stops Kestrel, then drains the ledger
            await app.DisposeAsync();
            return 0;
        });
        return cmd;
    }
}

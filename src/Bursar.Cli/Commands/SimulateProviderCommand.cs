using System.CommandLine;
using Microsoft.Extensions.Hosting;
using Bursar.Core.Pricing;
using Bursar.Providers.Simulator;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;

namespace Bursar.Cli.Commands;

internal static class SimulateProviderCommand
{
    public static Command Create()
    {
        var urls = new Option<string>("--urls") { Description = "Addresses to listen on", DefaultValueFactory = _ => "http://127.0.0.1:8090" };
        var ttft = new Option<int>("--ttft-ms") { Description = "Time to first token, milliseconds", DefaultValueFactory = _ => 0 };
        var tps = new Option<double>("--tokens-per-second") { Description = "Streaming speed; 0 = as fast as possible", DefaultValueFactory = _ => 0 };
        var cmd = new Command("simulate-provider", "Run the provider Simulator alone: Anthropic at <url>/v1/messages, OpenAI at <url>/v1/chat/completions") { urls, ttft, tps };
        cmd.SetAction(async (pr, ct) =>
        {
            var builder = WebApplication.CreateSlimBuilder([$"--urls={pr.GetValue(urls)}"]);
            builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            var app = builder.Build();
            var sim = new ProviderSimulator(new SimulatorOptions { TimeToFirstToken = TimeSpan.FromMilliseconds(pr.GetValue(ttft)), TokensPerSecond = pr.GetValue(tps) },
                TimeProvider.System, new PriceCatalog(PriceFiles.LoadBuiltIn()));
            app.MapProviderSimulator(sim);
            Console.WriteLine($"Provider Simulator on {pr.GetValue(urls)}  (Anthropic base URL: {pr.GetValue(urls)}, OpenAI base URL: {pr.GetValue(urls)}/v1)");
            await app.StartAsync(ct); await app.WaitForShutdownAsync(ct);
            return 0;
        });
        return cmd;
    }
}

using Bursar.Hosting;
using System.CommandLine;
using System.Globalization;
using Bursar.Core.Pricing;
using Bursar.Gateway.Hosting;

namespace Bursar.Cli.Commands;

internal static class PricesCommand
{
    public static Command Create()
    {
        var prices = new Command("prices", "The price catalog: built-in prices, imported LiteLLM prices, configured overrides");
        var file = new Argument<FileInfo>("file") { Description = "LiteLLM's model_prices_and_context_window.json" };
        var import = new Command("import", "Import LiteLLM's price file into the store (overrides built-in prices for the same model)") { file };
        import.SetAction((pr, ct) =>
        {
            var f = pr.GetValue(file)!;
            if (!f.Exists)
            {
                Console.Error.WriteLine($"No such file: {f.FullName}");
                return Task.FromResult(2);
            }
            using var s = f.OpenRead();
            var entries = PriceFiles.ReadLiteLlm(s, out var skipped);
            var n = CliOptions.OpenStore(pr, create: true).ImportPrices(entries, TimeProvider.System.GetUtcNow());
            Console.WriteLine($"Imported {n} priced models from {f.Name} ({skipped} entries skipped: non-chat modes, documentation or no token prices).");
            return Task.FromResult(0);
        });
        var filter = new Option<string?>("--filter") { Description = "Only models whose id contains this text" };
        var list = new Command("list", "List the effective catalog (USD per million tokens)") { filter };
        list.SetAction((pr, ct) =>
        {
            var catalog = BursarServices.LoadCatalog(CliOptions.OpenStore(pr), new BursarOptions());
            var f = pr.GetValue(filter);
            Console.WriteLine($"{"model",-44} {"provider",-12} {"input",9} {"output",9} {"cache rd",9} {"write 5m",9} {"write 1h",9}  source");
            static string R(decimal? d) => d is null ? "-" : d.Value.ToString("0.####", CultureInfo.InvariantCulture);
            foreach (var m in catalog.Models.Where(m => f is null || m.Model.Contains(f, StringComparison.OrdinalIgnoreCase)))
                Console.WriteLine($"{m.Model,-44} {m.Provider,-12} {R(m.Rates.Input),9} {R(m.Rates.Output),9} {R(m.Rates.CacheRead),9} {R(m.Rates.CacheWrite5m),9} {R(m.Rates.CacheWrite1h),9}  {m.Source}{(m.LongContext.Count > 0 ? $" (+tier >{m.LongContext[0].AboveInputTokens / 1000}k)" : "")}");
            Console.WriteLine($"{catalog.Count} models.");
            return Task.FromResult(0);
        });
        prices.Subcommands.Add(import);
        prices.Subcommands.Add(list);
        return prices;
    }
}

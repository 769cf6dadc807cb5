using System.CommandLine;
using System.Globalization;
using Bursar.Core.Routing;

namespace Bursar.Cli.Commands;

internal static class TrainRouterCommand
{
    public static Command Create()
    {
        var data = new Option<string[]>("--data") { Description = "Labeled prompt sets (RouteLLM csv folder or file), e.g. ../shared/data/routing/mmlu ../shared/data/routing/gsm8k", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<FileInfo>("--out") { Description = "Where to write the model file (Bursar:Routing:RouterModel)", DefaultValueFactory = _ => new FileInfo("router.json") };
        var holdout = new Option<bool>("--holdout") { Description = "Train on one half and report APGR on the other before training the file on everything (default true)", DefaultValueFactory = _ => true };
        var cmd = new Command("train-router", "Train the complexity router (P(needs the strong model)) from labeled prompts, calibrate its score quantiles and write a model file") { data, output, holdout };
        cmd.SetAction((pr, ct) =>
        {
            var all = new List<LabeledPrompt>();
            foreach (var path in pr.GetValue(data)!)
            {
                if (!Directory.Exists(path) && !File.Exists(path)) { Console.Error.WriteLine($"train-router: no such file or folder: {path}"); return Task.FromResult(2); }
                var set = RoutingDataset.Load(path);
                Console.WriteLine($"{set.Count:N0} labeled prompts from {path} (contaminated prompts dropped)");
                all.AddRange(set);
            }
            if (pr.GetValue(holdout))
            {
                var result = RoutingEvaluation.Run(all);
                var m = result.Routers[0];
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"held-out half ({result.Test:N0} prompts): APGR {m.Apgr:F3} (prompt length {result.Routers[2].Apgr:F3}, random 0.500)"));
            }
            Console.WriteLine($"training on all {all.Count:N0} prompts...");
            var router = ComplexityRouter.Train(all).Calibrated(all);
            var file = pr.GetValue(output)!;
            router.Save(file.FullName);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wrote {file.FullName}: threshold for 50% strong calls {router.ThresholdFor(0.5):F3}, for 20% {router.ThresholdFor(0.2):F3}"));
            Console.WriteLine("Use it: Bursar:Routing:RouterModel=" + file.FullName);
            return Task.FromResult(0);
        });
        return cmd;
    }
}

using System.Text;
using System.Text.Json;

namespace Bursar.Core.Routing;

/// <summary>A labeled prompt: whether the weak and the strong model answered it correctly, and its category (e.g. MMLU subject).</summary>
public sealed record LabeledPrompt(string Prompt, string Category, bool WeakCorrect, bool StrongCorrect);

/// <summary>Reads RouteLLM's evaluation files: a folder of <c>mmlu_&lt;subject&gt;.csv</c> or one GSM8K csv, minus contaminated prompts.</summary>
public static class RoutingDataset
{
    public static IReadOnlyList<LabeledPrompt> Load(string path)
    {
        var files = Directory.Exists(path) ? Directory.GetFiles(path, "*.csv").Order(StringComparer.Ordinal).ToArray() : [path];
        if (files.Length == 0) throw new FileNotFoundException($"No .csv files in {path}.");
        var dir = Directory.Exists(path) ? path : Path.GetDirectoryName(path)!;
        var contaminated = new HashSet<string>(StringComparer.Ordinal);
        var cfile = Path.Combine(dir, "contaminated_prompts.jsonl");
        if (File.Exists(cfile))
        {
            foreach (var line in File.ReadLines(cfile))
            {
                if (string.IsNullOrWhiteSpace(line)) continue;
                using var d = JsonDocument.Parse(line);
                if (d.RootElement.TryGetProperty("eval_prompt", out var p) && p.GetString() is { } s) contaminated.Add(s.Trim());
            }
        }
        var result = new List<LabeledPrompt>();
        foreach (var f in files)
        {
            var name = Path.GetFileNameWithoutExtension(f);
            // categories are what a caller's task tag says: the MMLU subject, or "math" for GSM8K's word problems
            var category = name.StartsWith("mmlu_", StringComparison.Ordinal) ? name[5..] : name.StartsWith("gsm8k", StringComparison.Ordinal) ? "math" : name;
            using var reader = new StreamReader(f, Encoding.UTF8);
            var header = ReadRecord(reader) ?? throw new FormatException($"{f} is empty.");
            if (header.Count < 3) throw new FormatException($"{f}: expected columns prompt, <weak model>, <strong model>.");
            List<string>? row;
            while ((row = ReadRecord(reader)) is not null)
            {
                if (row.Count < 3) continue;
                var prompt = row[0];
                if (contaminated.Contains(prompt.Trim())) continue;
                result.Add(new LabeledPrompt(prompt, category, IsTrue(row[1]), IsTrue(row[2])));
            }
        }
        return result;
    }

    private static bool IsTrue(string s) => s.Trim() is "True" or "true" or "1" or "1.0";

    /// <summary>One RFC 4180 record (quoted fields may hold commas, quotes and newlines).</summary>
    private static List<string>? ReadRecord(TextReader r)
    {
        var fields = new List<string>();
        var sb = new StringBuilder();
        var inQuotes = false;
        var any = false;
        int c;
        while ((c = r.Read()) != -1)
        {
            any = true;
            var ch = (char)c;
            if (inQuotes)
            {
                if (ch == '"')
                {
                    if (r.Peek() == '"') { sb.Append('"'); r.Read(); }
                    else inQuotes = false;
                }
                else sb.Append(ch);
            }
            else if (ch == '"') inQuotes = true;
            else if (ch == ',') { fields.Add(sb.ToString()); sb.Clear(); }
            else if (ch == '\n') { fields.Add(sb.ToString()); return fields; }
            else if (ch != '\r') sb.Append(ch);
        }
        if (!any) return null;
        fields.Add(sb.ToString());
        return fields;
    }
}

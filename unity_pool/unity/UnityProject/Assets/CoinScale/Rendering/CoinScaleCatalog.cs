// The catalog a Unity render server builds scenes from: a ScriptableObject that maps every name
// of the scene vocabulary (CoinScale.Protocol.Vocab) to an asset. Create it with the menu
// CoinScale > Create Catalog (it lands in Assets/CoinScale/Resources/CoinScaleCatalog.asset, where
// the server loads it by name) and drag your assets into the rows.
using System;
using System.Collections.Generic;
using CoinScale.Protocol;
using UnityEngine;

namespace CoinScale.Rendering
{
    [CreateAssetMenu(fileName = "CoinScaleCatalog", menuName = "CoinScale/Catalog")]
    public sealed class CoinScaleCatalog : ScriptableObject
    {
        /// <summary>The Resources path the server loads the catalog from.</summary>
        public const string ResourceName = "CoinScaleCatalog";

        [Serializable]
        public struct ShapePrefab
        {
            [Tooltip("A name from the spec's shapes: circle, square, triangle, ...")]
            public string shape;

            [Tooltip("Modelled inside a sphere of diameter 1 centred on its pivot, front facing -Z, upright at rotation 0.")]
            public GameObject prefab;
        }

        [Serializable]
        public struct TextureMap
        {
            [Tooltip("A name from the spec's textures: stripes, dots, checker, fur (solid needs no map).")]
            public string texture;

            [Tooltip("Greyscale pattern multiplied with the object's colour: white keeps the colour, darker is the contrast shade.")]
            public Texture map;
        }

        [Serializable]
        public struct BackgroundMaterial
        {
            [Tooltip("A name from the spec's backgrounds: plain, gradient, noise, grid, sky.")]
            public string background;

            [Tooltip("Material of the full-frame backdrop quad; a lit material lets the scene's lighting act on it.")]
            public Material material;
        }

        [Tooltip("Base material of every object (Standard or any lit shader with a main colour and main texture). Copied per colour and texture.")]
        public Material objectMaterial;

        public List<ShapePrefab> shapes = new List<ShapePrefab>();
        public List<TextureMap> textures = new List<TextureMap>();
        public List<BackgroundMaterial> backgrounds = new List<BackgroundMaterial>();

        /// <summary>The prefab of a shape, or null.</summary>
        public GameObject Prefab(string shape)
        {
            foreach (var entry in shapes)
                if (entry.shape == shape) return entry.prefab;
            return null;
        }

        /// <summary>The pattern of a texture, or null (always null for solid).</summary>
        public Texture Map(string texture)
        {
            if (texture == "solid") return null;
            foreach (var entry in textures)
                if (entry.texture == texture) return entry.map;
            return null;
        }

        /// <summary>The backdrop material of a background, or null.</summary>
        public Material Backdrop(string background)
        {
            foreach (var entry in backgrounds)
                if (entry.background == background) return entry.material;
            return null;
        }

        /// <summary>"kind name" of every vocabulary entry without an asset (plain may stay empty: flat grey).</summary>
        public List<string> Missing()
        {
            var missing = new List<string>();
            if (objectMaterial == null) missing.Add("objectMaterial");
            foreach (var shape in Vocab.Shapes)
                if (Prefab(shape) == null) missing.Add("shape " + shape);
            foreach (var texture in Vocab.Textures)
                if (texture != "solid" && Map(texture) == null) missing.Add("texture " + texture);
            foreach (var background in Vocab.Backgrounds)
                if (background != "plain" && Backdrop(background) == null) missing.Add("background " + background);
            return missing;
        }

        /// <summary>Unity calls this when the asset is created or reset from the inspector.</summary>
        private void Reset()
        {
            FillNames();
        }

        /// <summary>List every name of the vocabulary, with empty asset slots (drops existing rows).</summary>
        public void FillNames()
        {
            shapes.Clear();
            foreach (var shape in Vocab.Shapes) shapes.Add(new ShapePrefab { shape = shape });
            textures.Clear();
            foreach (var texture in Vocab.Textures)
                if (texture != "solid") textures.Add(new TextureMap { texture = texture });
            backgrounds.Clear();
            foreach (var background in Vocab.Backgrounds) backgrounds.Add(new BackgroundMaterial { background = background });
        }
    }
}
